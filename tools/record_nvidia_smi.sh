#!/usr/bin/env bash
# Records what a real nvidia-smi prints for the queries vllm-bootstrap makes, so the
# stand-in in tests/standins/bin can be checked against it. Run on a GPU machine:
#   OUT=some/dir tools/record_nvidia_smi.sh
set -u
dest=${OUT:?set OUT to a folder}
out=$(mktemp -d)
gpu_query=index,uuid,name,memory.total,memory.used
app_query=pid,gpu_uuid,used_memory
record() { # name, then the command
    local name=$1; shift
    "$@" >"$out/$name.stdout" 2>"$out/$name.stderr"; echo $? >"$out/$name.rc"
}
record gpus nvidia-smi --query-gpu=$gpu_query --format=csv,noheader,nounits
record apps-idle nvidia-smi --query-compute-apps=$app_query --format=csv,noheader,nounits
record bad-field nvidia-smi --query-gpu=index,no.such.field --format=csv,noheader,nounits
record list nvidia-smi -L
# A process holding GPU memory, as a loaded vLLM would.
python3 -c "
import torch, time, os
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device='cuda')
open('$out/holder.pid', 'w').write(str(os.getpid()))
time.sleep(30)
" &
holder=$!
for _ in $(seq 60); do [ -s "$out/holder.pid" ] && break; sleep 0.5; done
sleep 2
record apps-busy nvidia-smi --query-compute-apps=$app_query --format=csv,noheader,nounits
record gpus-busy nvidia-smi --query-gpu=$gpu_query --format=csv,noheader,nounits
kill $holder; wait $holder 2>/dev/null
CUDA_VISIBLE_DEVICES=0 record gpus-visible0 nvidia-smi --query-gpu=$gpu_query --format=csv,noheader,nounits
# One JSON file: {name: {stdout, stderr, rc}}.
python3 - "$out" >"$dest/nvidia-smi-recorded.json" <<'PY'
import json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
recorded = {}
for path in sorted(folder.glob("*.rc")):
    name = path.stem
    recorded[name] = {
        "stdout": (folder / f"{name}.stdout").read_text(),
        "stderr": (folder / f"{name}.stderr").read_text(),
        "rc": int(path.read_text()),
    }
recorded["holder_pid"] = (folder / "holder.pid").read_text() if (folder / "holder.pid").exists() else None
print(json.dumps(recorded, indent=1))
PY
cat "$dest/nvidia-smi-recorded.json"
