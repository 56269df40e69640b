//! Every entry change goes through one layer (`mmu/src/tdp/transition.rs`): no other source file
//! of the crate writes a page-table entry, updates page accounting, calls an
//! `ExternalPageTable` hook, flushes TLBs or frees a table page.
//!
//! Counting method (also used by `scripts/check-transition-layer.sh`, which can point it at
//! another tree with `MMU_SRC=<dir>` to get the figures of an older version): every line of every
//! `.rs` file under `mmu/src`, comment lines (`//`, `///`, `//!`) skipped, the layer itself
//! skipped, and each category counted once per line:
//! - *entry writes*: an atomic write (`.store(`, `.swap(`, `.compare_exchange`, `.fetch_`)
//!   outside the files whose atomics are not entries (`stats.rs`: the counters; `page.rs`: the
//!   deferred-free list) and not on the bugged flag;
//! - *writable-entry uses*: a use of an accessor that yields a writable entry or records a
//!   written value (`.sptep(`, `.entry(`, `.words(`, `set_old_spte(`) other than in the
//!   accessors' definitions;
//! - *page accounting*: a call of an `MmuStats` updater (`stats.table(`, `stats.leaf(`, ...);
//! - *zap figures*: a `ZapStats` field update (`.leaves +=`, ...);
//! - *hooks*: a call of an `ExternalPageTable` method or anything through `self.ext.`, outside
//!   `external.rs` (the trait and its forwarding impl);
//! - *TLB flushes* (`flush_remote_tlbs(`) outside `env.rs` (the trait and its forwarding impl);
//! - *page frees* (`MmuPage::destroy(`) outside `page.rs` (its definition).

use std::path::{Path, PathBuf};

const LAYER: &str = "tdp/transition.rs";

struct Category {
    name: &'static str,
    /// Files (relative to `mmu/src`) where these patterns are definitions, not uses.
    exempt_files: &'static [&'static str],
    patterns: &'static [&'static str],
    /// A line containing one of these is not counted (a non-entry atomic, a definition).
    exempt_lines: &'static [&'static str],
}

const CATEGORIES: &[Category] = &[
    Category {
        name: "entry writes",
        exempt_files: &["stats.rs", "page.rs"],
        patterns: &[".store(", ".swap(", ".compare_exchange", ".fetch_"],
        // The bugged flag is not an entry.
        exempt_lines: &["bugged."],
    },
    Category {
        name: "writable-entry uses",
        exempt_files: &[],
        patterns: &[".sptep(", ".entry(", ".words(", "set_old_spte("],
        // The accessors' definitions (`TdpIter::sptep` is built on `Table::entry`).
        exempt_lines: &[
            "fn sptep(",
            "fn entry(",
            "fn words(",
            "fn set_old_spte(",
            "self.table_at(self.level).entry(",
        ],
    },
    Category {
        name: "page accounting",
        exempt_files: &[],
        patterns: &[
            "stats.table(",
            "stats.leaf(",
            "stats.external_spt(",
            "stats.deferred(",
            "stats.leaked_external_spt(",
            "stats.leaked_private_page(",
        ],
        exempt_lines: &[],
    },
    Category {
        name: "zap figures",
        exempt_files: &[],
        patterns: &[".leaves +=", ".tables +=", ".blocked +=", ".flushes +="],
        exempt_lines: &[],
    },
    Category {
        name: "hook calls",
        exempt_files: &["external.rs"],
        patterns: &[
            "self.ext.",
            ".link_spt(",
            ".set_spte(",
            ".block_spte(",
            "ext.flush(",
            ".remove_spte(",
            ".free_spt(",
        ],
        exempt_lines: &[],
    },
    Category {
        name: "TLB flushes",
        exempt_files: &["env.rs"],
        patterns: &["flush_remote_tlbs("],
        exempt_lines: &[],
    },
    Category {
        name: "page frees",
        exempt_files: &["page.rs"],
        patterns: &["MmuPage::destroy("],
        exempt_lines: &[],
    },
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read mmu/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(category, file:line, text)` for every counted line.
fn offenders(src: &Path) -> Vec<(&'static str, String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("tdp/fault.rs")),
        "no mmu sources under {}",
        src.display()
    );
    let mut out = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == LAYER {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for c in CATEGORIES {
                if c.exempt_files.contains(&rel.as_str())
                    || c.exempt_lines.iter().any(|x| code.contains(x))
                {
                    continue;
                }
                if c.patterns.iter().any(|p| code.contains(p)) {
                    out.push((c.name, format!("{rel}:{}", n + 1), code.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn only_the_transition_layer_changes_entries() {
    let src = match std::env::var_os("MMU_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    };
    let found = offenders(&src);
    println!("places outside {LAYER} under {}:", src.display());
    for c in CATEGORIES {
        let n = found.iter().filter(|(name, _, _)| *name == c.name).count();
        println!("  {:<20} {n}", c.name);
    }
    for (name, at, code) in &found {
        println!("  [{name}] {at}: {code}");
    }
    assert!(
        found.is_empty(),
        "{} places outside the transition layer change entries, accounting or the external \
         table (listed above)",
        found.len()
    );
}

/// The counter must be able to fail: a write outside the layer is found.
#[test]
fn the_counter_finds_a_write_outside_the_layer() {
    let dir = std::env::temp_dir().join(format!("transition-layer-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tdp")).expect("mkdir");
    std::fs::write(
        dir.join("tdp/fault.rs"),
        "// it.sptep().store(0) in a comment is fine\n\
         fn f() {\n    it.sptep().store(0, Ordering::Release);\n    self.stats.leaf(r, l, 1);\n    \
         self.ext.set_spte(g, l, p);\n}\n",
    )
    .expect("write");
    std::fs::write(dir.join("tdp/transition.rs"), "fn g() { e.store(0); }\n").expect("write");
    let found = offenders(&dir);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    let names: Vec<_> = found.iter().map(|(n, at, _)| (*n, at.as_str())).collect();
    assert_eq!(
        names,
        [
            ("entry writes", "tdp/fault.rs:3"),
            ("writable-entry uses", "tdp/fault.rs:3"),
            ("page accounting", "tdp/fault.rs:4"),
            ("hook calls", "tdp/fault.rs:5"),
        ]
    );
}
