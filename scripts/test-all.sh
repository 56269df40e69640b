#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# The project's test command (`make test`): the host suite, then the in-guest suite.
# Prints both summaries, then the total "N passed, M failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
hlog=$(mktemp)
glog=$(mktemp)
trap 'rm -f "$hlog" "$glog"' EXIT
status=0

bash scripts/host-test.sh 2>&1 | tee "$hlog" || status=1
bash scripts/guest-suite.sh 2>&1 | tee "$glog" || status=1

host=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$hlog" | tail -n 1)
guest=$(grep -E '^guest: [0-9]+ passed, [0-9]+ failed$' "$glog" | tail -n 1)
hp=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"${host:-0 passed}")
hf=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"${host:-, 1 failed}")
gp=$(sed -E 's/^guest: ([0-9]+) passed.*/\1/' <<<"${guest:-guest: 0 passed}")
gf=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"${guest:-, 1 failed}")
echo "host: ${host:-no summary (counted as 1 failure)}"
echo "guest: ${guest#guest: }"
echo "$((hp + gp)) passed, $((hf + gf)) failed"
[[ $status -eq 0 && $((hf + gf)) -eq 0 ]]
