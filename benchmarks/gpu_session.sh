#!/usr/bin/env bash
# Every GPU measurement the README and docs/results quote, as one script of under 9 minutes on one H100/H200:
# the ensemble benchmark, gpu_check (the paper's grokking run, throughput, ensemble step time), and the
# reduced-scale semi-grokking and ungrokking sweeps through ensembles with more seeds than on the CPU.
#   bash benchmarks/gpu_session.sh OUT_DIR
# Each part has its own time limit, so one that overruns leaves the others' results.
set -u
out=${1:?usage: gpu_session.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/log.txt"
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" | tee -a "$out/log.txt"

timeout 110 python3 benchmarks/ensemble.py --accelerator gpu --steps 100 2>&1 | grep -v "Trainer.fit\|GPU avail\|TPU avail\|LOCAL_RANK\|Tip" | tee "$out/ensemble_gpu.txt"
timeout 130 python3 benchmarks/gpu_check.py 2>&1 | grep -v "Trainer.fit\|GPU avail\|TPU avail\|LOCAL_RANK\|Tip" | tee "$out/gpu_check.txt"

gpu='{"trainer.enable_checkpointing": false, "trainer.accelerator": "gpu"}'
start=$(date +%s)
timeout 200 python3 -m lit_grok sweep --config configs/cpu/semigrok_sweep.yaml --save_dir /tmp/sweeps --max_members 20 \
  --overrides "$gpu" --grids '[{"data.init_args.train_size": [150, 200, 250, 300, 350, 400, 450, 500], "seed_everything": [0, 1, 2, 3, 4]}]' \
  2>&1 | grep "^\[" | tee -a "$out/log.txt"
echo "semigrok sweep: $(( $(date +%s) - start )) s" | tee -a "$out/log.txt"
cp /tmp/sweeps/cpu-semigrok-sweep/summary.csv "$out/semigrok_summary.csv" 2>/dev/null

start=$(date +%s)
timeout 150 python3 -m lit_grok sweep --config configs/cpu/ungrok_sweep.yaml --save_dir /tmp/sweeps --max_members 32 \
  --overrides "$gpu" --grids '[{"trainer.callbacks.init_args.new_size": [30, 45, 68, 100, 150, 225, 340], "model.init_args.optimizer.init_args.weight_decay": [0.5, 1.0, 2.0], "seed_everything": [0, 1, 2]}]' \
  2>&1 | grep "^\[" | tee -a "$out/log.txt"
echo "ungrok sweep: $(( $(date +%s) - start )) s" | tee -a "$out/log.txt"
cp /tmp/sweeps/cpu-ungrok-sweep/summary.csv "$out/ungrok_summary.csv" 2>/dev/null
true
