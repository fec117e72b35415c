# The two commands of README.md: `make run` and `make test`. Both install what is missing first.
# CUDA=off builds without the CUDA backend, in build-cpu/ (on a machine without a GPU most of a
# full build's time goes to the CUDA kernels); the default builds it when /usr/local/cuda has a
# toolkit, so that the CUDA code is compile-checked everywhere (its tests skip without a GPU).
# `make test` also checks that the C++/CUDA files changed since .ci/format-base are clang-format
# clean (scripts/check-format.sh).
CUDA ?= on
ifeq ($(filter off OFF 0 no,$(CUDA)),)
BUILD ?= build
CUDA_FLAG := ON
else
BUILD ?= build-cpu
CUDA_FLAG := OFF
endif
JOBS ?= $(shell nproc)

.PHONY: deps build run test clean

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITSERVE_ENABLE_CUDA=$(CUDA_FLAG) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@bash scripts/run-demo.sh $(BUILD)

test: build
	@bash scripts/check-format.sh
	@ctest --test-dir $(BUILD) -LE gpu --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD)
