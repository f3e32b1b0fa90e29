.PHONY: run test check
run:   ## run camgate on embedded defaults with a simulated fleet
	scripts/run
test:  ## lint, type-check and the whole test suite (starts its own servers)
	scripts/test
check: test
