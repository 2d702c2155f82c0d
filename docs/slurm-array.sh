#!/usr/bin/env bash
# One `host map` job spread over N nodes by a Slurm job array.
#
#   sbatch --array=0-3 docs/slurm-array.sh      # 4 shards: task ids 0..3
#
# Each array task runs `host map --shard ID/COUNT` on the same input: shard I
# takes input lines I, I+N, I+2N, ... (counting from 0), so every line is
# mapped by exactly one task, and the same shard always gets the same lines.
# Each task writes its results (in its lines' order) to $OUT/shard-I.jsonl
# and its JSON report to $OUT/shard-I.report.jsonl. The array must start at
# 0 and be contiguous (--array=0-N-1).
#
# After the job, the results in input order are the shards' lines in turn:
#
#   paste -d '\n' out/shard-{0..3}.jsonl | sed '/^$/d' > results.jsonl
#
# Settings (environment variables, with their defaults): HOST=host,
# PROGRAM=task.wasm, ENTRY=square, INPUT=input.jsonl, OUT=out, and WORKERS
# (default: the cpus Slurm gave the task).
#
#SBATCH --job-name=host-map
#SBATCH --cpus-per-task=4
#SBATCH --output=host-map-%A_%a.log
set -euo pipefail

: "${SLURM_ARRAY_TASK_ID:?run me as a job array: sbatch --array=0-3 $0}"
count="${SLURM_ARRAY_TASK_COUNT:?Slurm sets SLURM_ARRAY_TASK_COUNT for a job array}"
if [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ]; then
    echo "the array must start at 0 (--array=0-$((count - 1)))" >&2
    exit 2
fi
index="$SLURM_ARRAY_TASK_ID"
out="${OUT:-out}"
mkdir -p "$out"

workers=()
if [ -n "${WORKERS:-${SLURM_CPUS_PER_TASK:-}}" ]; then
    workers=(--workers "${WORKERS:-$SLURM_CPUS_PER_TASK}")
fi

# Written under a temporary name, so a shard that fails leaves no results
# that look whole; a rerun of the task rewrites only its own files.
"${HOST:-host}" map "${PROGRAM:-task.wasm}" --entry "${ENTRY:-square}" \
    --input "${INPUT:-input.jsonl}" \
    --shard "$index/$count" \
    "${workers[@]}" \
    --quiet \
    --report-file "$out/shard-$index.report.jsonl" \
    > "$out/shard-$index.jsonl.part"
mv "$out/shard-$index.jsonl.part" "$out/shard-$index.jsonl"
