# syncline: everyday commands. Each target installs what it needs (scripts/tools.sh).
SHELL := /bin/bash
export SYNCLINE_CACHE ?= $(HOME)/.cache/syncline
export CARGO_TARGET_DIR ?= $(SYNCLINE_CACHE)/target
SYNCLINE := $(CARGO_TARGET_DIR)/debug/syncline
PG ?= postgres://postgres@127.0.0.1:5432

.PHONY: tools build test demo demo-stop stack-up stack-down reference lint bench fuzz

## tools: install Debian packages (PostgreSQL, MariaDB, Java), Apache Kafka from Maven Central and the Python interop client (pinned, cached); start the databases
tools:
	@scripts/tools.sh

## build: the syncline binary (debug)
build: tools
	cargo build --bin syncline

## test: every test, against a real broker, registry and Postgres
test: build
	SYNCLINE_PYTHON=$(SYNCLINE_CACHE)/venv/bin/python SYNCLINE_NODE_MODULES=$(SYNCLINE_CACHE)/node/node_modules cargo test --workspace --lib --bins --tests --no-fail-fast -- --test-threads=2

## stack-up / stack-down: Apache Kafka on 127.0.0.1:9092 and the registry on 127.0.0.1:8081 (and the databases, scripts/services.sh)
stack-up: build
	@scripts/stack.sh up
stack-down:
	@scripts/stack.sh down

## demo: start the stack, create a sample source table, sync it into a target database
demo: stack-up
	@scripts/demo.sh

## demo-stop: stop the demo pipeline and the stack
demo-stop:
	@scripts/demo.sh stop; scripts/stack.sh down

## reference: regenerate docs/reference.md from the config types
reference: build
	$(SYNCLINE) reference > docs/reference.md

## bench: each stage beside the limit it passes through (raw producer, consumer, pgoutput decoding, COPY) and beside the peers users would pick (Debezium's Postgres source and JDBC sink on Kafka Connect, Kafka Streams, Quix Streams), same broker, same data, same run (release build; prints figures and ratios)
bench: tools
	@scripts/peers.sh || echo "bench: the JVM peers could not be installed; their rows say so"
	cargo bench --bench pipeline
	cargo bench --bench dedup
	cargo bench --bench cdc
	cargo bench --bench webhook
	cargo bench --bench mysql_cdc

## fuzz: each cargo-fuzz target (record decoding with hostile writer schemas, pgoutput messages, the pipeline-file loader) for FUZZ_SECONDS (default 180) from the corpus in fuzz/corpus/
fuzz:
	@scripts/fuzz.sh

## lint: formatting and clippy
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
