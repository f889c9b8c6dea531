#!/usr/bin/env bash
# Stops the one-node cluster of start.sh.
pkill -x slurmd || true
pkill -x slurmctld || true
pkill -x munged || true
