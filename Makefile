# Two commands do everything on a fresh Debian machine with Go:
#   make sandbox   the main job (see README)
#   make test      every test
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

CONTROLLER_GEN := go tool controller-gen

.PHONY: all build images test test-unit manifests verify-generated lint run sandbox sandbox-down bench k8s-bin promtool cnpg-bin deps clean

all: build

# The version (VERSION) stamps the binary and tags the operator image.
VERSION := $(shell cat VERSION)

build: ## Build the holdfast binary and the kubectl plugin (kubectl-holdfast) into bin/
	go build -ldflags "-X holdfast.dev/holdfast/internal/cli.Version=$(VERSION)" -o bin/holdfast ./cmd/holdfast
	go build -ldflags "-X holdfast.dev/holdfast/internal/cli.Version=$(VERSION)" -o bin/kubectl-holdfast ./cmd/kubectl-holdfast

images: deps ## Build the OCI images (operator, postgres-15) reproducibly into a layout in the build cache; print it and the digests
	go run ./hack/images

k8s-bin: ## Build (or reuse) the pinned control-plane binaries
	hack/build-k8s.sh >/dev/null

promtool: ## Build (or reuse) the pinned promtool, which checks and unit-tests the alerting rules
	hack/build-promtool.sh >/dev/null

cnpg-bin: ## Build (or reuse) CloudNativePG's pinned manager, which the comparison runs in the sandbox
	hack/build-cnpg.sh >/dev/null

deps: ## Install the Debian packages the tests need, when missing
	hack/install-deps.sh

# Everything make manifests writes; verify-generated checks it is committed.
GENERATED := api config charts dist

manifests: ## Regenerate CRDs, RBAC and deepcopy code with controller-gen; copy CRDs and RBAC rules into the chart; write dist/install.yaml
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd rbac:roleName=holdfast-operator paths=./... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	rm -f charts/holdfast/crds/*.yaml
	cp config/crd/bases/*.yaml charts/holdfast/crds/
	cp config/rbac/role.yaml charts/holdfast/files/role.yaml
	sed -i 's/^appVersion: .*/appVersion: $(VERSION)/' charts/holdfast/Chart.yaml
	go run ./hack/install-manifest -o dist/install.yaml

verify-generated: manifests ## Fail when committed generated code is stale
	@git diff --exit-code -- $(GENERATED) || { echo "generated code is stale: run 'make manifests' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- $(GENERATED))" || { git status --porcelain -- $(GENERATED); echo "make manifests made new files: commit them" >&2; exit 1; }

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1; }
	go vet ./...
	go tool staticcheck ./...

test: deps k8s-bin promtool cnpg-bin verify-generated lint ## Every test: unit, instance (real postgres), envtest, alerting rules, end-to-end
	KUBEBUILDER_ASSETS=$$(hack/build-k8s.sh --dir) PROMTOOL=$$(hack/build-promtool.sh --dir)/promtool go test -count=1 -timeout 75m ./...

test-unit: ## Unit tests only
	go test -count=1 -short ./...

run: k8s-bin ## etcd + kube-apiserver + kube-controller-manager from bin/, the operator, and the sample
	KUBEBUILDER_ASSETS=$$(hack/build-k8s.sh --dir) go run ./hack/run

K8S_BIN = $$(hack/build-k8s.sh --dir)

sandbox: deps k8s-bin build ## The sandbox, Holdfast installed, a 3-instance cluster ready, a row written through -rw and read through -ro
	hack/sandbox.sh

sandbox-down: ## Stop the sandbox
	bin/holdfast sandbox down --bin-dir $(K8S_BIN)

BENCH_N ?= 20
# pgbench scale of the backup benchmark's database: 70 is about 1.05 GiB.
BENCH_SCALE ?= 70

bench: deps k8s-bin cnpg-bin build ## Performance figures: sandbox start-up, image builds and sizes, failover of Holdfast, CloudNativePG and Patroni in one run (BENCH_N injections per fault), backup and restore throughput (about 15 minutes)
	hack/install-bench-deps.sh
	hack/bench-sandbox.sh
	hack/bench-images.sh
	go run ./hack/bench failover -n $(BENCH_N)
	go run ./hack/bench-backups -scale $(BENCH_SCALE)

clean:
	rm -rf bin
