#!/usr/bin/env bash
# tokenizer_shards.sh — `gptline tokenizer train --shards`: a vocabulary
# learned from a shard dataset's documents equals the one learned from the
# same text as files, for byte-level shards and for shards made with a BPE
# vocabulary; a dataset made with another vocabulary is refused.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"
F="$lic/GPL-3 $lic/Apache-2.0 $lic/BSD"
# shellcheck disable=SC2086
check "train from files" $G tokenizer train -o "$TMP/files.gltok" --name v -n 700 $F
# shellcheck disable=SC2086
check "byte-level shards" $G shards pack -o "$TMP/bytes" $F
check "train from byte-level shards" $G tokenizer train -o "$TMP/shards.gltok" --name v -n 700 --shards "$TMP/bytes"
cmp -s "$TMP/files.gltok" "$TMP/shards.gltok"; _result $? "the same vocabulary"
# shellcheck disable=SC2086
check "shards made with a BPE vocabulary" $G shards pack -o "$TMP/bpe" -t "$TMP/files.gltok" $F
check "train from them" $G tokenizer train -o "$TMP/shards2.gltok" --name v -n 700 --shards "$TMP/bpe" \
  --shards-tokenizer "$TMP/files.gltok"
cmp -s "$TMP/files.gltok" "$TMP/shards2.gltok"; _result $? "the same vocabulary again"
check_fails "without the dataset's vocabulary" 2 $G tokenizer train -o "$TMP/x.gltok" -n 300 --shards "$TMP/bpe"
check "another vocabulary" $G tokenizer train -o "$TMP/other.gltok" -n 300 $lic/GPL-2
check_fails "with a vocabulary the dataset was not made with" 1 $G tokenizer train -o "$TMP/x.gltok" -n 300 \
  --shards "$TMP/bpe" --shards-tokenizer "$TMP/other.gltok"
grep -q "not with" "$TMP/.err"; _result $? "says so"
check_fails "files and --shards together" 2 $G tokenizer train -o "$TMP/x.gltok" -n 300 --shards "$TMP/bpe" $lic/BSD
done_testing
