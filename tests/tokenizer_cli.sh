#!/bin/sh
# tokenizer_cli.sh — `gptline tokenizer`: --help, exit statuses, encode and
# decode against tiktoken's ids, convert round trips, train.
GPTLINE=${GPTLINE:-build/gptline}
D=${GL_DATA:-../shared/data}/tokenizers
T=$(mktemp -d "${TMPDIR:-/tmp}/gltokcli.XXXXXX")
trap 'rm -rf "$T"' EXIT
n=0; fail=0
check() { # check NAME COMMAND...: ok when the command succeeds
    n=$((n + 1)); name=$1; shift
    if "$@" >"$T/out" 2>"$T/err"; then echo "ok $n - $name"
    else echo "not ok $n - $name"; sed 's/^/# /' "$T/err" | head -5; fail=1; fi
}
status() { # status NAME WANT COMMAND...: ok when the command exits WANT
    n=$((n + 1)); name=$1; want=$2; shift 2
    "$@" >"$T/out" 2>"$T/err" </dev/null; got=$?
    if [ "$got" = "$want" ]; then echo "ok $n - $name"
    else echo "not ok $n - $name (exit $got, expected $want)"; sed 's/^/# /' "$T/err" | head -5; fail=1; fi
}
for c in encode decode info convert train; do
    check "tokenizer $c --help" $GPTLINE tokenizer $c --help
done
status "unknown subcommand exits 2" 2 $GPTLINE tokenizer nope
status "encode without -t exits 2" 2 $GPTLINE tokenizer encode
status "bad option exits 2" 2 $GPTLINE tokenizer encode --bogus
status "missing vocabulary exits 1" 1 $GPTLINE tokenizer info -t "$T/none.tiktoken"
printf 'IQ== 0\n!!!! 1\n' > "$T/bad.tiktoken"
status "malformed vocabulary exits 1" 1 $GPTLINE tokenizer info -t "$T/bad.tiktoken" --pattern gpt2
if [ ! -d "$D" ]; then echo "# the rest skipped: no test data in $D"; echo "1..$n"; exit $fail; fi
CL=$D/vocab/cl100k_base.tiktoken
check "encode c-headers with cl100k" sh -c "$GPTLINE tokenizer encode -t $CL < $D/texts/c-headers.txt > $T/ids"
check "ids equal tiktoken's" cmp -s "$T/ids" "$D/expected/c-headers.cl100k_base.ids"
check "encode a file argument with the GPT-2 files" sh -c "$GPTLINE tokenizer encode -t $D/vocab/gpt2/encoder.json $D/texts/web-html.txt > $T/ids2 && cmp -s $T/ids2 $D/expected/web-html.gpt2.ids"
check "decode gives the text back" sh -c "$GPTLINE tokenizer decode -t $CL < $T/ids | cmp -s - $D/texts/c-headers.txt"
printf 'a<|endoftext|>b' > "$T/sp.txt"
check "special text is plain text by default" sh -c "$GPTLINE tokenizer encode -t $CL $T/sp.txt > $T/spids && ! grep -qw 100257 $T/spids && $GPTLINE tokenizer decode -t $CL < $T/spids | cmp -s - $T/sp.txt"
check "--allow-special gives the id" sh -c "test \"\$($GPTLINE tokenizer encode -t $CL --allow-special='<|endoftext|>' $T/sp.txt)\" = '64 100257 65'"
status "decode of a non-token id exits 3" 3 sh -c "echo 100256 | $GPTLINE tokenizer decode -t $CL"
status "decode of junk exits 3" 3 sh -c "echo '12 x' | $GPTLINE tokenizer decode -t $CL"
check "convert cl100k to gltok" $GPTLINE tokenizer convert -t $CL -o "$T/cl.gltok"
check "same hash after conversion" sh -c "$GPTLINE tokenizer info $CL | grep hash > $T/h1 && $GPTLINE tokenizer info $T/cl.gltok | grep hash > $T/h2 && cmp -s $T/h1 $T/h2"
check "convert r50k to GPT-2 files and back to tiktoken" sh -c "mkdir $T/g && $GPTLINE tokenizer convert -t $D/vocab/r50k_base.tiktoken -o $T/g/encoder.json && $GPTLINE tokenizer convert -t $T/g/encoder.json -o $T/r50k_base.tiktoken && cmp -s $T/r50k_base.tiktoken $D/vocab/r50k_base.tiktoken"
check "train 1000 tokens from stdin" sh -c "$GPTLINE tokenizer train -n 1000 -o $T/s.gltok < $D/texts/tinyshakespeare.txt"
check "the trained vocabulary round-trips" sh -c "$GPTLINE tokenizer encode -t $T/s.gltok $D/texts/unicode-stress.txt | $GPTLINE tokenizer decode -t $T/s.gltok | cmp -s - $D/texts/unicode-stress.txt"
echo "1..$n"
exit $fail
