#!/usr/bin/env bash
# `make slurm-test`: the shipped sbatch script under a real one-node SLURM on localhost.
#
# Installs Debian's slurm-wlm and munge when missing (needs root), starts munged, slurmctld and
# slurmd from scripts/slurm/test/slurm.conf.in with every state, log and key file in a temporary
# folder, runs scripts/slurm/test/scenarios.py (tiny data, 2 CPU tasks) and stops every daemon it
# started, by PID, on any exit. A machine where SLURM cannot start fails the test with the
# reason and the daemons' logs; it is never skipped.
#
# Environment: PY (python with open_clip_dissect installed; default python3), KEEP=1 keeps the
# temporary folder after a success too (it is always kept after a failure).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
PY="${PY:-python3}"
START=$(date +%s)
export SLURM_TEST_START=$START  # one clock for run.sh and scenarios.py

fail() { echo "slurm-test: FAILED: $*" >&2; exit 1; }
say() { echo "slurm-test [$(( $(date +%s) - START ))s]: $*"; }

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "slurm-wlm and munge are not installed, and installing them needs root"
    say "installing slurm-wlm and munge (apt)"
    # Debian's policy-rc.d convention keeps the packages' own services from starting; a file put
    # here for the install only is removed again.
    added_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    install_ok=1
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null; } || install_ok=""
    [ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ -n "$install_ok" ] || fail "apt-get install slurm-wlm munge failed"
fi
[ "$(id -u)" = 0 ] || fail "slurmd must run as root to start job steps (running as $(id -un))"
NODE="$(hostname -s)"
getent hosts "$NODE" >/dev/null || fail "the host name $NODE does not resolve (the job's MASTER_ADDR)"
say "$(slurmctld -V), $(munged -V 2>&1 | head -n 1), node $NODE"

# ---------------------------------------------------------------- cluster
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dissect-slurm.XXXXXX")"
chmod 755 "$WORK"  # munged wants every folder above its socket searchable by all
mkdir -p "$WORK"/{munge,key,state/slurmctld,state/slurmd,log}
chmod 700 "$WORK/key"
PIDS=()  # daemons started here, stopped in reverse order

stop_daemons() {
    local status=$?
    set +e
    if [ ${#PIDS[@]} -gt 1 ]; then  # slurmctld is up: end the test's jobs before their slurmd
        scancel --quiet --user=root 2>/dev/null
        for _ in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { echo "slurm-test: pid $pid ignored SIGTERM, killing it"; kill -9 "$pid"; }
    done
    if [ $status -ne 0 ]; then
        for log in "$WORK"/log/*; do
            [ -s "$log" ] && { echo "----- last lines of $log"; tail -n 25 "$log"; } >&2
        done
        echo "slurm-test: FAILED after $(( $(date +%s) - START ))s; files kept in $WORK" >&2
    elif [ -n "${KEEP:-}" ]; then
        echo "slurm-test: files kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $status
}
trap stop_daemons EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r CTLD_PORT SLURMD_PORT < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
sed -e "s|@WORK@|$WORK|g" -e "s|@NODE@|$NODE|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
    -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$HERE/slurm.conf.in" > "$WORK/slurm.conf"
export SLURM_CONF="$WORK/slurm.conf"

# started NAME SECONDS COMMAND...: wait until COMMAND succeeds; fail at once when the daemon
# started last exits, or after SECONDS.
started() {
    local name=$1 limit=$2 pid=${PIDS[-1]} rc=0
    shift 2
    for _ in $(seq $((limit * 2))); do
        "$@" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || rc=$?
            fail "$name exited with status $rc at start (logs below)"
        fi
        sleep 0.5
    done
    fail "$name did not come up within ${limit}s: '$*' kept failing (logs below)"
}

mungekey --create --keyfile="$WORK/key/munge.key"
munged --foreground --key-file="$WORK/key/munge.key" --socket="$WORK/munge/munge.sock" \
    --pid-file="$WORK/munge/munged.pid" --seed-file="$WORK/key/munged.seed" \
    --log-file="$WORK/log/munged.log" > "$WORK/log/munged.out" 2>&1 &
PIDS+=($!)
started munged 20 munge -S "$WORK/munge/munge.sock" -n

slurmctld -D -f "$SLURM_CONF" > "$WORK/log/slurmctld.out" 2>&1 &
PIDS+=($!)
started slurmctld 30 bash -c 'scontrol ping | grep -q UP'

slurmd -D -f "$SLURM_CONF" -N "$NODE" > "$WORK/log/slurmd.out" 2>&1 &
PIDS+=($!)
started slurmd 60 bash -c '[ "$(sinfo -h -N -o %t)" = idle ]'
say "cluster up: munged ${PIDS[0]}, slurmctld ${PIDS[1]}, slurmd ${PIDS[2]} (ports $CTLD_PORT, $SLURMD_PORT)"

# ---------------------------------------------------------------- the jobs
"$PY" "$HERE/scenarios.py" --work "$WORK" --sbatch "$REPO/scripts/slurm/train_multinode.sbatch"
say "passed"
