#!/usr/bin/env bash
# Stop the cluster started by start_cluster.sh: slurmctld and slurmd (through `scontrol shutdown`,
# then by their pid files) and the munged it started. --purge also deletes the cluster's state
# directory ($POSITRONGAN_SLURM_DIR, default /var/tmp/positrongan-slurm) and the
# /etc/slurm/slurm.conf symlink to it.
set -uo pipefail

STATE="${POSITRONGAN_SLURM_DIR:-/var/tmp/positrongan-slurm}"
export SLURM_CONF="$STATE/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf

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
    # The /etc/slurm/slurm.conf symlink goes too, but only if it points at our config.
    if [[ -L "$ETC_CONF" && "$(readlink "$ETC_CONF")" == "$STATE/slurm.conf" ]]; then rm -f "$ETC_CONF"; fi
    rm -rf "$STATE"
fi
echo "SLURM cluster stopped"
