# Developer targets. CI runs .ci/run.
GO ?= go

.PHONY: test race bench run lint
test:
	$(GO) test ./...
race:
	$(GO) test -race ./...
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
run:
	$(GO) run ./cmd/taskhub demo
lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
