#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Expected results of the upstream suites the guest runs (kvm-ioctls' own tests, the kernel's
# KVM selftests): the one place where a suite's outcomes are compared with what the repository
# says they should be, and where that statement is rewritten from a run.
#
#   scripts/expectations.sh names SUITE RUNLIST
#       every check name of SUITE: one per run of RUNLIST and per expectation (a test expected
#       but not run is a check too, and fails)
#   scripts/expectations.sh verdicts SUITE RUNLIST OUTCOMES
#       one "RESULT PASS|SKIP|XFAIL|FAIL name [why]" line per check (see below)
#   scripts/expectations.sh update [OUTCOMES]
#       rewrites tests/expected/SUITE.txt for every suite OUTCOMES has outcomes of (default:
#       target/guest-outcomes.txt, written by every scripts/guest-suite.sh run); for the
#       integrator, and the result is reviewed by hand: a changed non-pass state gets the reason
#       "TODO(review): <what the run printed>", which fails the next run until a person writes the
#       real reason
#   scripts/expectations.sh self-test
#       checks the verdict rules on made-up outcomes and the committed tests/expected/*.txt
#       (known states, a reviewed reason for every non-pass, no duplicates); no guest needed,
#       part of scripts/host-test.sh
#
# SUITE is kvm-ioctls or kselftests. RUNLIST lines: "MODE NAME TIMEOUT" (what the build staged:
# scripts/kvm-ioctls-tests.sh, scripts/kselftests.sh). OUTCOMES lines, printed by the guest:
# "OUTCOME SUITE MODE NAME STATE SECONDS DETAIL...", STATE one of pass fail skip ignored timeout.
# tests/expected/SUITE.txt lines: "NAME MODE STATE REASON...", '#' comments; every state other
# than pass needs a one-line reason.
#
# Verdicts (the counting cannot lie):
#   PASS   expected pass, passed
#   SKIP   expected skip (kselftest exit 4) or ignored (#[ignore]), and so it was: counted as skipped
#   XFAIL  expected fail or timeout, and so it was: counted in its own column, never as a pass;
#          the state "fail|timeout" is for a test that never passes and, depending on the host's
#          load, fails or runs out of time (one of them must happen: a pass or a skip is a FAIL)
#   FAIL   everything else, each with its why:
#          - "now passes: update expectations" (expected a non-pass, passed): a failure too, so
#            that the expected file always says what the module does (scripts/expectations.sh
#            update, then review);
#          - a different state than expected (a regression, or fail <-> timeout <-> skip);
#          - a run without an expectation ("extra"), an expectation without a run ("missing"),
#            a run the guest did not report ("missing"), a non-pass expectation without a
#            reviewed reason.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

expected_file() { echo "$repo/tests/expected/$1.txt"; }

# The check name of a run, as the guest suite reports it.
check_name_awk='
    function check_name(suite, name, mode) {
        if (suite == "kselftests") return "kselftest_" name "_tdx_" mode
        return suite "/" name "_tdx_" mode
    }'

check_suite() {
    case "$1" in
        kvm-ioctls | kselftests) ;;
        *) echo "expectations: unknown suite '$1' (kvm-ioctls or kselftests)" >&2; exit 64 ;;
    esac
}

# verdicts SUITE RUNLIST OUTCOMES [EXPECTED]
verdicts() {
    local suite=$1 runlist=$2 outcomes=$3 expected=${4:-$(expected_file "$1")}
    # No file: no expectation, so that every run is "extra" (a failure), never a silent pass.
    [[ -f "$expected" ]] || { echo "expectations: no $expected: every $suite run is extra" >&2; expected=/dev/null; }
    awk -v suite="$suite" -v efile="${expected#"$repo"/}" "$check_name_awk"'
        FILENAME == ARGV[1] {          # the expectations
            if ($0 ~ /^[ \t]*(#|$)/) next
            key = $1 " " $2
            if (key in exp_state) { dupe[key] = 1; next }
            exp_state[key] = $3
            r = $0
            sub(/^[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]+[^ \t]+[ \t]*/, "", r)
            reason[key] = r
            order[++n] = key
            next
        }
        FILENAME == ARGV[2] {          # the run list
            if (NF == 0) next
            key = $2 " " $1
            if (!(key in run)) { run[key] = 1; if (!(key in exp_state)) order[++n] = key }
            next
        }
        $1 == "OUTCOME" && $2 == suite {
            key = $4 " " $3
            if (key in got) { twice[key] = 1; next }
            got[key] = $5
            d = $0
            for (i = 1; i <= 6; i++) sub(/^[^ ]+ /, "", d)
            if (NF <= 6) d = ""
            detail[key] = d
            secs[key] = $6
        }
        END {
            for (i = 1; i <= n; i++) {
                key = order[i]; split(key, p, " "); name = check_name(suite, p[1], p[2])
                # Membership first: reading an awk array element creates it.
                has_exp = key in exp_state; has_run = key in run; has_got = key in got
                e = exp_state[key]; g = got[key]; why = reason[key]
                d = detail[key]; if (d != "") d = ": " d
                if (key in dupe) { print "RESULT FAIL " name " " efile " lists it more than once"; continue }
                if (!has_run) {
                    print "RESULT FAIL " name " missing: " efile " expects " e ", but the build did not list it"
                    continue
                }
                if (!has_exp) {
                    print "RESULT FAIL " name " extra: no expectation in " efile " (got " (has_got ? g : "nothing") d ")"
                    continue
                }
                if (e !~ /^(pass|fail|skip|ignored|timeout|fail\|timeout)$/) {
                    print "RESULT FAIL " name " " efile " has the unknown state \"" e "\""; continue
                }
                if (e != "pass" && (why == "" || why ~ /^TODO/)) {
                    print "RESULT FAIL " name " " efile " expects " e " without a reviewed reason (\"" why "\")"
                    continue
                }
                if (key in twice) { print "RESULT FAIL " name " reported more than once by the guest"; continue }
                if (!has_got) { print "RESULT FAIL " name " missing: the guest reported no outcome (expected " e ")"; continue }
                if (e == "fail|timeout" && (g == "fail" || g == "timeout")) {
                    print "RESULT XFAIL " name " (expected " e ": " why ")" d
                } else if (g == e) {
                    if (e == "pass") print "RESULT PASS " name
                    else if (e == "skip" || e == "ignored") print "RESULT SKIP " name " (expected " e ": " why ")"
                    else print "RESULT XFAIL " name " (expected " e ": " why ")" d
                } else if (g == "pass") {
                    print "RESULT FAIL " name " now passes: update expectations (expected " e ": " why ")"
                } else {
                    print "RESULT FAIL " name " got " g ", expected " e (why == "" ? "" : " (" why ")") d
                }
            }
        }' "$expected" "$runlist" "$outcomes"
}

names() {
    local suite=$1 runlist=$2 expected
    expected=$(expected_file "$suite")
    [[ -f "$expected" ]] || expected=/dev/null
    awk -v suite="$suite" "$check_name_awk"'
        FILENAME == ARGV[1] { if ($0 ~ /^[ \t]*(#|$)/) next; key = $1 " " $2 }
        FILENAME == ARGV[2] { if (NF == 0) next; key = $2 " " $1 }
        !(key in seen) { seen[key] = 1; split(key, p, " "); print check_name(suite, p[1], p[2]) }
    ' "$expected" "$runlist"
}

# update [OUTCOMES]: rewrite the expected file of every suite the outcomes cover.
update() {
    local outcomes=${1:-$repo/target/guest-outcomes.txt} suite expected old tmp suites
    [[ -s "$outcomes" ]] || { echo "expectations: no outcomes in $outcomes (run scripts/guest-suite.sh)" >&2; exit 1; }
    mapfile -t suites < <(awk '$1 == "OUTCOME" { print $2 }' "$outcomes" | sort -u)
    for suite in "${suites[@]}"; do
        check_suite "$suite"
        expected=$(expected_file "$suite")
        old=$expected
        [[ -f "$old" ]] || old=/dev/null
        tmp=$(mktemp)
        {
            if [[ -f "$expected" ]]; then
                # Keep the header (the comment block before the first entry).
                awk '/^[ \t]*(#|$)/ { print; next } { exit }' "$expected"
            else
                echo "# Expected results of $suite in the guest suite; see scripts/expectations.sh."
                echo "# NAME MODE STATE REASON (a reason for every state but pass)"
            fi
            awk -v suite="$suite" '
                FILENAME == ARGV[1] {
                    if ($0 ~ /^[ \t]*(#|$)/) next
                    r = $0; sub(/^[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]+[^ \t]+[ \t]*/, "", r)
                    old[$1 " " $2] = $3; why[$1 " " $2] = r; next
                }
                $1 == "OUTCOME" && $2 == suite {
                    key = $4 " " $3
                    d = $0; for (i = 1; i <= 6; i++) sub(/^[^ ]+ /, "", d); if (NF <= 6) d = ""
                    st = $5
                    if (st == "pass") r = ""
                    else if (old[key] == "fail|timeout" && (st == "fail" || st == "timeout") && why[key] != "") { st = old[key]; r = why[key] }
                    else if (old[key] == st && why[key] != "") r = why[key]
                    else r = "TODO(review): " (d == "" ? "no detail printed" : d)
                    printf "%-62s %-8s %-7s %s\n", $4, $3, st, r
                }' "$old" "$outcomes" | sed 's/ *$//' | LC_ALL=C sort -k1,1 -k2,2
        } >"$tmp"
        mkdir -p "$(dirname "$expected")"
        if [[ -f "$expected" ]] && cmp -s "$tmp" "$expected"; then
            echo "expectations: ${expected#"$repo"/} unchanged"
            rm -f "$tmp"
            continue
        fi
        if [[ -f "$expected" ]]; then diff -u "$expected" "$tmp" | sed -n '3,$p' | grep '^[-+]' || true; fi
        mv "$tmp" "$expected"
        echo "expectations: rewrote ${expected#"$repo"/}: $(grep -c '^[^#].*TODO(review)' "$expected" || true) reasons to review (TODO)"
    done
}

self_test() {
    local d ok=0 bad=0
    d=$(mktemp -d)
    trap 'rm -rf "$d"' RETURN
    cat >"$d/exp" <<'EOF'
# header
a off pass
b off fail needs X (issue 12)
c off skip no Y here
d off pass
e off timeout runs 100 s
f off fail needs Z
g off pass
h off fail
i off pass
j off fail|timeout fills RAM
k off fail|timeout fills RAM
EOF
    printf '%s\n' "off a 60" "off b 60" "off c 60" "off d 60" "off e 60" "off f 60" "off h 60" \
        "off i 60" "off j 60" "off k 60" "off x 60" >"$d/run"
    cat >"$d/out" <<'EOF'
OUTCOME kselftests off a pass 1
OUTCOME kselftests off b fail 2 exit 1: assertion
OUTCOME kselftests off c skip 0 exit 4
OUTCOME kselftests off d fail 3 exit 1: regression
OUTCOME kselftests off e timeout 60 killed after 60 s
OUTCOME kselftests off f pass 1
OUTCOME kselftests off h fail 1 exit 1
OUTCOME kselftests off j timeout 60 killed after 60 s
OUTCOME kselftests off k pass 1
OUTCOME kselftests off x pass 1
OUTCOME kvm-ioctls off a fail 1 another suite: ignored here
EOF
    verdicts kselftests "$d/run" "$d/out" "$d/exp" >"$d/v"
    want=(
        "RESULT PASS kselftest_a_tdx_off"
        "RESULT XFAIL kselftest_b_tdx_off (expected fail: needs X (issue 12)): exit 1: assertion"
        "RESULT SKIP kselftest_c_tdx_off (expected skip: no Y here)"
        "RESULT FAIL kselftest_d_tdx_off got fail, expected pass: exit 1: regression"
        "RESULT XFAIL kselftest_e_tdx_off (expected timeout: runs 100 s): killed after 60 s"
        "RESULT FAIL kselftest_f_tdx_off now passes: update expectations (expected fail: needs Z)"
        "RESULT FAIL kselftest_g_tdx_off missing: $d/exp expects pass, but the build did not list it"
        "RESULT FAIL kselftest_h_tdx_off $d/exp expects fail without a reviewed reason (\"\")"
        "RESULT FAIL kselftest_i_tdx_off missing: the guest reported no outcome (expected pass)"
        "RESULT XFAIL kselftest_j_tdx_off (expected fail|timeout: fills RAM): killed after 60 s"
        "RESULT FAIL kselftest_k_tdx_off now passes: update expectations (expected fail|timeout: fills RAM)"
        "RESULT FAIL kselftest_x_tdx_off extra: no expectation in $d/exp (got pass)"
    )
    if diff <(printf '%s\n' "${want[@]}") "$d/v"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    # The committed files themselves: known states, a reviewed reason for every non-pass, each
    # (name, mode) once.
    local f
    for f in "$repo"/tests/expected/*.txt; do
        if awk '
            /^[ \t]*(#|$)/ { next }
            {
                r = $0; sub(/^[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t]+[^ \t]+[ \t]*/, "", r)
                if (NF < 3 || $3 !~ /^(pass|fail|skip|ignored|timeout|fail\|timeout)$/) { print FILENAME ":" FNR ": bad line: " $0; bad = 1 }
                else if ($3 != "pass" && (r == "" || r ~ /^TODO/)) { print FILENAME ":" FNR ": " $3 " without a reviewed reason"; bad = 1 }
                if (($1 " " $2) in seen) { print FILENAME ":" FNR ": " $1 " " $2 " listed twice"; bad = 1 }
                seen[$1 " " $2] = 1
            }
            END { exit bad }' "$f"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    echo "expectations self-test: $ok passed, $bad failed"
    ((bad == 0))
}

cmd=${1:-}
shift || true
case "$cmd" in
    names) [[ $# -eq 2 ]] || exit 64; check_suite "$1"; names "$@" ;;
    verdicts) [[ $# -eq 3 ]] || exit 64; check_suite "$1"; verdicts "$@" ;;
    update) [[ $# -le 1 ]] || exit 64; update "$@" ;;
    self-test) self_test ;;
    *) sed -n '7,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64 ;;
esac
