# Two entry points on a fresh machine with only Python 3.10+:
#   make demo   install into .venv, then generate from the shipped models
#   make test   install into .venv, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch first and pinned (2.13.0 is the CPU build on CI's disk); csrc/ is then compiled
# against it without build isolation, which would otherwise fetch another torch.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-all bench clean assets aot-check aot-full fingerprint-assets

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel ninja
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test,eval,hf]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/adjust demo

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

# The GPU build, checked without a GPU (docs/kernels_triton.md): every Triton kernel launch compiled for
# sm_90 (0 spill bytes for bf16/fp16 at the Dream-7B / LLaDA-8B shapes, shared memory in the limit) and
# csrc/*.cu with nvcc; the shared-memory-heavy kernels also for sm_80. CI runs it after `make test`.
# The CUDA 13.0 compiler pieces (~270 MB) come from PyPI into $(CUDA_TOOLKIT).
CUDA_TOOLKIT ?= build/cuda-toolkit
CUDA_TOOLKIT_PKGS = nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
                    nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
AOT = $(BIN)/python -m adjust_kernels.aot

$(CUDA_TOOLKIT)/.installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q --target $(CUDA_TOOLKIT) $(CUDA_TOOLKIT_PKGS)
	touch $@

aot-check: install $(CUDA_TOOLKIT)/.installed
	CUDA_HOME=$(CUDA_TOOLKIT)/nvidia/cu13 $(AOT) --arch 90 --nvcc
	$(AOT) --arch 80 --kernel sampler_input_kernel --kernel partials_kernel

aot-full: install $(CUDA_TOOLKIT)/.installed
	CUDA_HOME=$(CUDA_TOOLKIT)/nvidia/cu13 $(AOT) --arch 90 --arch 80 --sweep full --nvcc

bench: install
	$(BIN)/python -m pytest benchmarks/ --benchmark-only -q

clean:
	rm -rf $(VENV) build *.egg-info adjust_kernels/_C*.so

# Re-create the shipped models and samplers (CPU, about three hours in all; see docs/training.md).
# Every artefact comes from the package's own commands; data and sampler with their defaults (no
# flags); runs/ keeps logs and checkpoints.
ASSET_STEPS_synthetic = 3000
ASSET_STEPS_tasks     = 3000
ASSET_STEPS_text      = 1500
ASSET_PROMPTS_synthetic = bos
ASSET_PROMPTS_tasks     = testbed
ASSET_PROMPTS_text      = bos

assets: install $(foreach t,synthetic tasks text,asset-$(t))

asset-%:
	$(BIN)/adjust train-base --testbed $* --out runs/base-$* --steps $(ASSET_STEPS_$*) --threads 1
	$(BIN)/adjust data --base runs/base-$* --prompts $(ASSET_PROMPTS_$*) --out runs/traj-$* --threads 1
	$(BIN)/adjust train-sampler --base runs/base-$* --data runs/traj-$* --out runs/sampler-$* --threads 1
	mkdir -p adjust/assets/models/$* adjust/assets/samplers/$*
	cp runs/base-$*/config.json runs/base-$*/model.safetensors runs/base-$*/tokenizer.json runs/base-$*/train_log.jsonl adjust/assets/models/$*/
	cp runs/sampler-$*/config.json runs/sampler-$*/model.safetensors runs/sampler-$*/train_log.jsonl adjust/assets/samplers/$*/

# Record weight fingerprints in shipped configs saved before they existed (docs/reliability.md#identity);
# no retraining, and a second run changes nothing.
fingerprint-assets: install
	$(BIN)/python -c "from adjust.identity import stamp_shipped, Path; import adjust; \
	[print('stamped', f) for f in stamp_shipped(Path(adjust.__file__).parent / 'assets')]"
