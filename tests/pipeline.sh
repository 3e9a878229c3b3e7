#!/usr/bin/env bash
# pipeline.sh — the stages chained as a user would, on text from this
# machine: train a vocabulary, pack pretraining shards, pretrain, import
# conversations and rankings, SFT from the pretrained model, RM from the
# SFT model, evaluate and sample with the chat template. Small and short:
# it checks that every stage reads what the previous one wrote.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"
M="--layers 2 --heads 2 --width 32 --context 48 -B 4 -T 48 --threads 1 -q"

check "vocabulary" $G tokenizer train -o "$TMP/v.gltok" -n 400 $lic/GPL-3 $lic/Apache-2.0
V="$TMP/v.gltok"
check "pretraining shards" $G shards pack -o "$TMP/pre" -t "$V" $lic/GPL-3 $lic/Apache-2.0 $lic/GPL-2
check "held-out shards" $G shards pack -o "$TMP/val" -t "$V" $lic/LGPL-2.1
check "pretrain" $G train pretrain --data "$TMP/pre" --val "$TMP/val" --out "$TMP/base" $M --steps 30 \
  --lr 3e-3 --warmup 5 --eval-every 30 --eval-batches 2
for i in $(seq 40); do
  printf '{"prompt": "Repeat: word%d", "response": "word%d"}\n' $i $i
done > "$TMP/sft.jsonl"
for i in $(seq 40); do
  printf '{"prompt": "Is %d even?", "responses": ["%s", "%s"]}\n' $i \
    "$([ $((i % 2)) = 0 ] && echo yes || echo no)" "$([ $((i % 2)) = 0 ] && echo no || echo yes)"
done > "$TMP/rm.jsonl"
check "import SFT" $G shards import --kind sft -t "$V" -o "$TMP/sft" "$TMP/sft.jsonl"
check "import RM" $G shards import --kind rm -t "$V" -o "$TMP/rm" "$TMP/rm.jsonl"
check "SFT from the pretrained model" $G train sft --init "$TMP/base" --data "$TMP/sft" --out "$TMP/sftm" $M \
  --steps 20 --lr 1e-3
check "RM from the SFT model" $G train rm --init "$TMP/sftm" --data "$TMP/rm" --val "$TMP/rm" --out "$TMP/rmm" $M \
  --steps 20 --lr 1e-3 --eval-every 20
grep -q '"val_accuracy"' "$TMP/rmm/metrics.jsonl"; _result $? "RM reports held-out pairwise accuracy"
[ -f "$TMP/rmm/ckpt-00000020/score.safetensors" ]; _result $? "RM checkpoint has its head"
check "eval" $G eval --model "$TMP/base" --data "$TMP/val" -B 4 -T 48 --batches 2
grep -q '"bits_per_byte"' "$TMP/.out"; _result $? "eval reports bits per byte"
check "sample with the chat template" $G sample --model "$TMP/sftm" -T "$V" --chat --prompt "Repeat: word7" -n 8 -t 0
check_fails "SFT on pretraining data is refused" 1 $G train sft --init "$TMP/base" --data "$TMP/pre" --out "$TMP/x" $M
$G shards pack -o "$TMP/bytes" $lic/GPL-3 2>/dev/null
check_fails "a model on data of another vocabulary is refused" 1 $G train pretrain --init "$TMP/base" \
  --data "$TMP/bytes" --out "$TMP/y" $M
grep -q "vocabulary has 404 tokens" "$TMP/.err"; _result $? "names both vocabularies"
# a vocabulary of the same size that is not the model's
check "another vocabulary of 400 tokens" $G tokenizer train -o "$TMP/w.gltok" -n 400 $lic/GPL-2
check "data made with it" $G shards pack -o "$TMP/other" -t "$TMP/w.gltok" $lic/GPL-2
check_fails "a model on data of a same-size vocabulary is refused" 1 $G train pretrain --init "$TMP/base" \
  --data "$TMP/other" --out "$TMP/z" $M
grep -q "same size, another vocabulary" "$TMP/.err"; _result $? "says so"
check_fails "eval on it is refused" 1 $G eval --model "$TMP/base" --data "$TMP/other" -B 4 -T 48
check_fails "sampling with it is refused" 1 $G sample --model "$TMP/base" -T "$TMP/w.gltok" --prompt "x" -n 2
grep -q "not the vocabulary the model was trained with" "$TMP/.err"; _result $? "says so"
done_testing
