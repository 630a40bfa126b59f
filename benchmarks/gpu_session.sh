#!/usr/bin/env bash
# Every GPU measurement the README and docs/results quote, on one H100/H200, in two parts of under 10
# minutes each (one device command each):
#   bash benchmarks/gpu_session.sh OUT_DIR bench    # ensemble benchmark, gpu_check (~3 min on an H200)
#   bash benchmarks/gpu_session.sh OUT_DIR sweeps   # semi-grokking (5 seeds) and ungrokking (3 seeds) sweeps
#                                                   # through ensembles (~8 min on an H200, estimated)
# Each step has its own time limit, so one that overruns leaves the others' results in OUT_DIR.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR bench|sweeps}
part=${2:-bench}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
quiet="Trainer.fit\|GPU avail\|TPU avail\|LOCAL_RANK\|Tip"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/log.txt"
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" | tee -a "$out/log.txt"

sweep() {  # sweep NAME MAX_MEMBERS SECONDS GRIDS: configs/cpu/NAME_sweep.yaml on the GPU, with these grids
  local start
  start=$(date +%s)
  timeout "$3" python3 -m lit_grok sweep --config "configs/cpu/$1_sweep.yaml" --save_dir /tmp/sweeps \
    --max_members "$2" --overrides '{"trainer.enable_checkpointing": false, "trainer.accelerator": "gpu"}' \
    --grids "$4" 2>&1 | grep "^\[" | tee -a "$out/log.txt"
  echo "$1 sweep: $(( $(date +%s) - start )) s" | tee -a "$out/log.txt"
  cp "/tmp/sweeps/cpu-$1-sweep/summary.csv" "$out/$1_summary.csv" 2>/dev/null
}

if [ "$part" = bench ]; then
  timeout 150 python3 benchmarks/ensemble.py --accelerator gpu --steps 100 2>&1 | grep -v "$quiet" | tee "$out/ensemble_gpu.txt"
  timeout 130 python3 benchmarks/gpu_check.py 2>&1 | grep -v "$quiet" | tee "$out/gpu_check.txt"
else
  sweep semigrok 20 380 '[{"data.init_args.train_size": [150, 200, 250, 300, 350, 400, 450, 500], "seed_everything": [0, 1, 2, 3, 4]}]'
  # ungrokking branches from the network pre-trained on every pair (not run on a GPU since the protocol changed)
  timeout 120 python3 -m lit_grok fit --config configs/cpu/ungrok_pretrain.yaml --trainer.accelerator=gpu \
    --trainer.enable_progress_bar=false 2>&1 | grep -v "$quiet" | tail -2 | tee -a "$out/log.txt"
  sweep ungrok 32 150 '[{"model.init_args.optimizer.init_args.weight_decay": [0.5, 1.0, 2.0], "data.init_args.train_size": [30, 45, 68, 100, 150, 225, 340], "data.init_args.data_seed": [0, 1, 2]}]'
fi
true
