const UPSTREAM: &[(&str, &str)] = &[];
const DIFFERS: &[(&str, &str, &str)] = &[];
