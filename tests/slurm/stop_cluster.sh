#!/usr/bin/env bash
# Stop the cluster started by start_cluster.sh: slurmctld and slurmd (through `scontrol shutdown`,
# then by their pid files) and the munged it started. --purge also deletes the cluster's state
# directory ($POSITRONGAN_SLURM_DIR, default /var/tmp/positrongan-slurm).
set -uo pipefail

STATE="${POSITRONGAN_SLURM_DIR:-/var/tmp/positrongan-slurm}"
export SLURM_CONF="$STATE/slurm.conf"

# A pid file names a live process (not a zombie awaiting its reaper).
alive() { [[ -s "$1" ]] && [[ "$(ps -o stat= -p "$(cat "$1")" 2>/dev/null)" == [^Z]* ]]; }

if alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; then
    scontrol shutdown >/dev/null 2>&1
    for _ in $(seq 100); do alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid" || break; sleep 0.1; done
fi
for pidfile in "$STATE/slurmctld.pid" "$STATE/slurmd.pid"; do
    alive "$pidfile" && kill "$(cat "$pidfile")"
done

# munged writes its pid here; stop it only if start_cluster.sh started it (it leaves this mark).
if [[ -f "$STATE/munged.started" ]] && alive /run/munge/munged.pid; then
    kill "$(cat /run/munge/munged.pid)"
    rm -f "$STATE/munged.started"
fi

if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$STATE"
fi
echo "SLURM cluster stopped"
