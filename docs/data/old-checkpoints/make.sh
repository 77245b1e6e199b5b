#!/bin/bash
# Run in /work/wt-arch-base (main at a0b462c): tiny runs whose checkpoint-000002 the new code must resume.
set -e
cd /work/wt-arch-base
COMMON="env=metarl/Navigation2D-v0 meta_batch_size=2 episodes_per_task=2 horizon=10 hidden_sizes=[8] iterations=3 checkpoint_every=1 keep_checkpoints=3 num_workers=1 learner_threads=1 seed=3"
for v in "metasgd-alpha-adam|configs/navigation2d-metasgd.yaml|alpha_update=adam" \
         "maml-adam|configs/navigation2d-maml.yaml|meta_optimizer=adam" \
         "reptile|configs/navigation2d-maml.yaml|algorithm=reptile"; do
  IFS='|' read name cfg extra <<< "$v"
  out=/tmp/oldck/$name
  rm -rf $out
  nice -n 15 .venv/bin/metarl train $cfg --out $out --quiet --set $COMMON $extra
done
