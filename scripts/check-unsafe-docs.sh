#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Host-side check of the module crate's unsafe documentation, without the kernel tree: the rules
# of clippy's `undocumented_unsafe_blocks` and `missing_safety_doc`, which the module build
# (`make CLIPPY=1` in scripts/build-module.sh) enforces with the real clippy. This one runs in a
# second, so `make host-test` catches the same mistakes before a module build.
#
#   scripts/check-unsafe-docs.sh [FILE.rs | DIR]...   # default: src/
#   scripts/check-unsafe-docs.sh --self-test          # proves the check finds what it must
#
# Rules (one offender line each, `file:line: message`; exit 1 if any), as clippy applies them:
#   - every `unsafe { ... }` block and every `unsafe impl` has a `// SAFETY:` comment in the
#     comment block right above its line (attribute lines may stand in between); a block on a
#     later line of a statement spanning several lines may have it above the statement's first
#     line, unless that statement is an `if`/`while`/`match` (clippy does not look past a
#     branch's condition). A comment on the same line does not count;
#   - every `unsafe fn` defined outside a trait impl (`unsafe extern "C" fn` callbacks included)
#     and every `unsafe trait` has a `# Safety` section in its doc comment (attributes and plain
#     comments may stand between the doc and the item).
# Stricter than clippy in one corner: a `// SAFETY:` trailing the previous statement's line,
# which clippy takes, is not taken here. Comments and string literals are ignored when looking
# for `unsafe`. With Debian's clippy-driver installed, --self-test also checks that clippy
# reports exactly the same lines on its samples.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

check() {
    python3 - "$@" <<'PY'
import os
import re
import sys

BLOCK = re.compile(r'\bunsafe\s*\{')
IMPL = re.compile(r'\bunsafe\s+impl\b')
# A named function: `unsafe fn f`, `unsafe extern "C" fn f` (after the strings are blanked).
FN = re.compile(r'\bunsafe\s+(?:extern\s+(?:""\s+)?)?fn\s+\w+')
TRAIT = re.compile(r'\bunsafe\s+trait\s+\w+')
BRANCH = re.compile(r'^\s*(?:\}\s*else\s+)?(?:if|while|match)\b')


def code_of(line):
    """The line without string/char literals and without its `//` comment."""
    line = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
    line = re.sub(r"'(?:[^'\\]|\\.)'", "''", line)
    i = line.find('//')
    return line if i < 0 else line[:i]


def is_comment(line):
    return line.lstrip().startswith('//')


def is_attr(line):
    return line.lstrip().startswith('#[') or line.lstrip().startswith('#![')


def continues(code):
    """Whether a code line leaves its statement open (the next line is more of it)."""
    c = code.rstrip()
    return c != '' and not c.endswith((';', '{', '}'))


def comment_above(lines, i, want, doc_only=False):
    """Whether the comment block above line `i` contains `want`. Walks up over attributes and,
    for code, over the earlier lines of the same statement unless it is a branch."""
    k = i - 1
    while k >= 0:
        s = lines[k]
        if is_comment(s):
            if doc_only and not s.lstrip().startswith('///'):
                # Plain comments between doc and item: keep walking.
                k -= 1
                continue
            if want in s:
                return True
            k -= 1
            continue
        if is_attr(s):
            k -= 1
            continue
        code = code_of(s)
        if not doc_only and continues(code):
            if BRANCH.match(code):
                return False
            k -= 1
            continue
        return False
    return False


def in_trait_impl(lines, i):
    """Whether line `i` lies inside an `impl Trait for Type` block (by indentation)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    for k in range(i - 1, -1, -1):
        s = lines[k]
        if not s.strip() or is_comment(s):
            continue
        ind = len(s) - len(s.lstrip())
        if ind < indent:
            c = code_of(s).strip()
            if re.match(r'(unsafe\s+)?impl\b', c):
                return ' for ' in c
            indent = ind
            if ind == 0:
                return False
    return False


def check_file(path):
    bad = []
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    for i, line in enumerate(lines):
        if is_comment(line):
            continue
        code = code_of(line)
        if BLOCK.search(code) and not comment_above(lines, i, 'SAFETY:'):
            bad.append((i + 1, 'unsafe block without a `// SAFETY:` comment'))
        if IMPL.search(code) and not comment_above(lines, i, 'SAFETY:'):
            bad.append((i + 1, 'unsafe impl without a `// SAFETY:` comment'))
        if FN.search(code) and not in_trait_impl(lines, i):
            if not comment_above(lines, i, '# Safety', doc_only=True):
                bad.append((i + 1, 'unsafe fn without a `# Safety` section in its doc comment'))
        if TRAIT.search(code) and not comment_above(lines, i, '# Safety', doc_only=True):
            bad.append((i + 1, 'unsafe trait without a `# Safety` section in its doc comment'))
    return bad


def files(args):
    for a in args:
        if os.path.isdir(a):
            for root, _, names in os.walk(a):
                for n in sorted(names):
                    if n.endswith('.rs'):
                        yield os.path.join(root, n)
        else:
            yield a


count = 0
for path in sorted(set(files(sys.argv[1:]))):
    for line, msg in check_file(path):
        print(f'{path}:{line}: {msg}')
        count += 1
if count:
    print(f'check-unsafe-docs: {count} undocumented unsafe item(s)', file=sys.stderr)
    sys.exit(1)
PY
}

# Documented the ways clippy accepts: nothing may be reported.
good_sample() {
    cat <<'RS'
/// Doc.
///
/// # Safety
///
/// `p` is valid.
#[no_mangle]
unsafe extern "C" fn cb(p: *const u8) -> u8 {
    // SAFETY: the caller's contract.
    let v = unsafe { *p };
    // SAFETY: as above.
    v.wrapping_add(unsafe { *p })
}
fn g(_: u8) {}
fn f(p: *const u8) -> u8 {
    let _s = "unsafe { not code }"; // unsafe { in a comment }
    // SAFETY: a statement over several lines, the comment above its first.
    let v = core::convert::identity(
        unsafe { *p },
    );
    // SAFETY: an expression statement over several lines.
    g(
        unsafe { *p },
    );
    if v == 0 {
        // SAFETY: inside a branch, on its own line.
        return unsafe { *p };
    }
    // SAFETY: as above.
    unsafe { *p }
}
struct S;
// SAFETY: nothing to share.
#[allow(unused)]
unsafe impl Sync for S {}
/// # Safety
///
/// Never.
unsafe trait T {
    /// # Safety
    ///
    /// Never.
    unsafe fn m(&self);
}
// SAFETY: trivially.
unsafe impl T for S {
    unsafe fn m(&self) {}
}
type Cb = unsafe extern "C" fn(*mut u8);
RS
}

# Each offender on a line marked `BAD`: exactly those must be reported.
bad_sample() {
    cat <<'RS'
/// No safety section.
unsafe fn a() {} // BAD
unsafe extern "C" fn b(_: u32) -> i32 { // BAD
    0
}
fn c(p: *const u8) -> u8 {
    // A comment, but not a safety one.
    let v = unsafe { *p }; // BAD
    // SAFETY: this one covers the statement below, not the one after it.
    let w = v;
    let x = unsafe { *p }; // BAD
    let y = x.wrapping_add(/* SAFETY: not on the same line */ unsafe { *p }); // BAD
    // SAFETY: not past a branch's condition.
    if w == 0
        && unsafe { *p } == 1 // BAD
    {
        return y;
    }
    w + x
}
struct S;
unsafe impl Send for S {} // BAD
/// No safety section.
unsafe trait T {} // BAD
RS
}

self_test() {
    # Global: the EXIT trap removes it.
    t=$(mktemp -d)
    trap 'rm -rf "$t"' EXIT
    good_sample > "$t/good.rs"
    bad_sample > "$t/bad.rs"
    local ok=1 out want
    if ! out=$(check "$t/good.rs" 2>&1); then
        echo "self-test: documented code was reported:"; echo "$out"; ok=0
    fi
    want=$(grep -n 'BAD$' "$t/bad.rs" | cut -d: -f1 | sed "s|^|$t/bad.rs:|" | sort)
    if out=$(check "$t/bad.rs" 2>/dev/null); then
        echo "self-test: undocumented code passed"; ok=0
    elif [[ "$(cut -d: -f1,2 <<<"$out" | sort)" != "$want" ]]; then
        echo "self-test: wrong offenders:"; echo "$out"; echo "expected lines:"; echo "$want"; ok=0
    fi
    # The samples as the real clippy sees them, with the lints the module build denies.
    local clippy=/usr/bin/clippy-driver f got
    if [[ -x "$clippy" ]]; then
        echo 'check-private-items = true' > "$t/clippy.toml"
        for f in good bad; do
            got=$(cd "$t" && CLIPPY_CONF_DIR="$t" "$clippy" --edition 2021 --crate-type lib \
                --emit=metadata -o "$t/$f.rmeta" -A unused -A clippy::all \
                -W clippy::undocumented_unsafe_blocks -W clippy::missing_safety_doc "$f.rs" 2>&1 \
                | sed -nE "s|^ *--> ($f\.rs:[0-9]+):.*|$t/\1|p" | sort -u)
            if [[ $f == good && -n "$got" ]]; then
                echo "self-test: clippy reports the good sample:"; echo "$got"; ok=0
            elif [[ $f == bad && "$got" != "$want" ]]; then
                echo "self-test: clippy disagrees on the bad sample:"; echo "$got"; ok=0
            fi
        done
    else
        echo "check-unsafe-docs: no $clippy: the samples are not cross-checked with clippy"
    fi
    # The real sources pass, and fail once one of their SAFETY comments is gone.
    mkdir "$t/src"
    cp "$repo"/src/*.rs "$t/src/"
    if ! out=$(check "$t/src" 2>&1); then
        echo "self-test: src/ does not pass:"; echo "$out"; ok=0
    fi
    local victim
    victim=$(grep -l '// SAFETY:' "$t"/src/*.rs | head -n1)
    sed -i '0,/\/\/ SAFETY:/s//\/\/ (removed):/' "$victim"
    if check "$t/src" >/dev/null 2>&1; then
        echo "self-test: src/ with a SAFETY comment removed ($victim) passed"; ok=0
    fi
    if ((ok)); then
        echo "check-unsafe-docs: self-test passed"
    else
        echo "check-unsafe-docs: self-test FAILED"
        return 1
    fi
}

if [[ "${1:-}" == --self-test ]]; then
    self_test
elif (($#)); then
    check "$@"
else
    check "$repo/src"
fi
