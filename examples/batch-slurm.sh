#!/usr/bin/env bash
# examples/sweep.toml as a Slurm array job: 4 tasks, each running the jobs of its shard (`compressor batch` reads
# SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT), on storage every node sees. Submit from the checkout:
#   sbatch examples/batch-slurm.sh
# then, when all tasks are done (or from a dependent job: sbatch --dependency=afterany:<id> ...):
#   compressor batch examples/sweep.toml --merge
# A task that was killed or preempted reruns only its unfinished jobs: resubmit the same array.
#SBATCH --job-name=compressor-sweep
#SBATCH --array=0-3
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --output=out/sweep-slurm-%A_%a.log
set -euo pipefail
# Statistics (calibration, analyses) shared by every task: keep them on the shared storage too.
export COMPRESSOR_CACHE="${COMPRESSOR_CACHE:-$PWD/out/sweep/cache}"
export COMPRESSOR_NO_PROGRESS=1
exec "${COMPRESSOR:-compressor}" batch examples/sweep.toml --jobs 1
