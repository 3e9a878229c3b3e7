#!/usr/bin/env bash
# shards_import.sh — `gptline shards import` and `shards pack --tokenizer`
# with a vocabulary trained on this machine's text: SFT records keep their
# loss spans over the assistant text and its end-of-text; text that looks
# like a special token stays ordinary text; HH-RLHF transcripts and ranked
# lists become rankings with the right prompt, responses and ranks; bad
# lines are named by line number, counted and skipped (exit 1) while the
# good ones are kept.
. "$(dirname "$0")/tap.sh"
G=$GPTLINE
lic=/usr/share/common-licenses
[ -d $lic ] || skip_all "no $lic on this machine"

check "import --help" $G shards import --help
check "train a 600-token vocabulary" $G tokenizer train -o "$TMP/v.gltok" -n 600 $lic/GPL-3 $lic/Apache-2.0
V="$TMP/v.gltok"

cat > "$TMP/sft.jsonl" <<'J'
{"prompt": "Say hi", "response": "Hi there!"}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}]}
not json
{"prompt": "no response"}
{"prompt": "<|endoftext|> injected?", "response": "plain <|endoftext|> text"}
J
check_fails "SFT import with two bad lines exits 1" 1 $G shards import --kind sft -t "$V" -o "$TMP/sft" "$TMP/sft.jsonl"
grep -q "sft.jsonl:3: not a JSON object" "$TMP/.err"; _result $? "line 3 named"
grep -q "sft.jsonl:4: needs" "$TMP/.err"; _result $? "line 4 named"
check "cat the SFT records" $G shards cat --text -T "$V" "$TMP/sft"
is "3 records kept" "$(wc -l < "$TMP/.out")" 3
is "chat layout" "$(sed -n 1p "$TMP/.out")" "<|user|>Say hi<|assistant|>Hi there!<|endoftext|>"
$G shards cat --meta "$TMP/sft" | grep '"record":1' > "$TMP/m1"
grep -q '"loss_spans":\[\[[0-9]*,[0-9]*\],\[[0-9]*,[0-9]*\]\]' "$TMP/m1"; _result $? "two assistant turns, two loss spans"
# the loss span of record 0 decodes to the reply and its end-of-text
$G shards cat --doc 0 --limit 1 "$TMP/sft" > "$TMP/ids0"
span=$($G shards cat --meta --limit 1 "$TMP/sft" | sed 's/.*"loss_spans":\[\[\([0-9]*\),\([0-9]*\)\]\].*/\1 \2/')
read -r a b <<< "$span"
ids=$(cut -d' ' -f$((a + 1))-$b "$TMP/ids0")
eot=$($G tokenizer info -t "$V" | sed -n 's/^end-of-text *\([0-9]*\).*/\1/p')
is "the span ends with end-of-text ($eot)" "${ids##* }" "$eot"
want=$(printf 'Hi there!' | $G tokenizer encode -t "$V" | tr -s ' \n' ' ' | sed 's/ $//')
is "the span covers the reply's tokens" "${ids% *}" "$want"
# injection: record 2 has exactly one end-of-text id (after the reply)
n=$($G shards cat --doc 2 --limit 1 "$TMP/sft" | tr ' ' '\n' | grep -cx "$eot")
is "'<|endoftext|>' typed by a user is not the control token" "$n" 1

cat > "$TMP/rm.jsonl" <<'J'
{"chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.", "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: London."}
{"prompt": "Pick a color", "responses": ["blue", "green", "mud"], "ranks": [0, 0, 1]}
{"prompt": "tie", "responses": ["a", "b"], "ranks": [0, 0]}
{"prompt": "one", "responses": ["only"]}
J
check_fails "RM import with two bad lines exits 1" 1 $G shards import --kind rm -t "$V" -o "$TMP/rm" "$TMP/rm.jsonl"
grep -q "rm.jsonl:3: all responses tie" "$TMP/.err"; _result $? "a ranking of ties is refused"
grep -q "rm.jsonl:4: .*2 to 9" "$TMP/.err"; _result $? "a single response is refused"
check "cat --meta" $G shards cat --meta "$TMP/rm"
grep -q '"record":0.*"responses":\[\[[0-9]*,[0-9]*\],\[[0-9]*,[0-9]*\]\],"ranks":\[0,1\]' "$TMP/.out"
_result $? "HH pair: two responses ranked 0, 1"
grep -q '"record":1.*"ranks":\[0,0,1\]' "$TMP/.out"; _result $? "ranked list with a tie"
$G shards cat --text -T "$V" --limit 1 "$TMP/rm" > "$TMP/t0"
is "HH prompt, then the responses" "$(cat "$TMP/t0")" "<|user|>What is the capital of France?<|assistant|>Paris.London."

printf '{"prompt": "Write a poem"}\n{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n' > "$TMP/rl.jsonl"
check "RL prompts" $G shards import --kind rl -t "$V" -o "$TMP/rl" "$TMP/rl.jsonl"
$G shards cat --text -T "$V" "$TMP/rl" > "$TMP/t1"
is "a prompt ends with the assistant role" "$(sed -n 1p "$TMP/t1")" "<|user|>Write a poem<|assistant|>"
is "a conversation's last reply is dropped" "$(sed -n 2p "$TMP/t1")" "<|user|>Hi<|assistant|>"
check "stat says rl-prompts" $G shards stat "$TMP/rl"
grep -q "kind        rl-prompts" "$TMP/.out"; _result $? "record kind in the manifest"
{ echo '{"prompt": "a", "response": "b"}'; printf '{"prompt": "'; head -c 17000000 /dev/zero | tr '\0' x; echo '"}';
  echo '{"prompt": "c", "response": "d"}'; } > "$TMP/big.jsonl"
check_fails "an oversized line is refused" 1 $G shards import --kind sft -t "$V" -o "$TMP/big" "$TMP/big.jsonl"
grep -q "big.jsonl:2: line of 17000014 bytes is over the limit" "$TMP/.err"; _result $? "and named with its size"
is "the lines around it are kept" "$($G shards cat "$TMP/big" | wc -l)" 2
check_fails "import without a vocabulary file" 2 $G shards import --kind sft -t bytes -o "$TMP/x" "$TMP/sft.jsonl"

# pack with the vocabulary: ids decode back to the input
check "pack --tokenizer" $G shards pack -o "$TMP/pk" -t "$V" $lic/BSD $lic/Apache-2.0
check "cat --text with it" $G shards cat --text -T "$V" --limit 1 "$TMP/pk"
{ cat $lic/BSD; echo; } | cmp -s - "$TMP/.out"; _result $? "round trip through the vocabulary"
check_fails "cat --text with the wrong tokenizer" 1 $G shards cat --text "$TMP/pk"
grep -q "was tokenized by" "$TMP/.err"; _result $? "names both tokenizers"
done_testing
