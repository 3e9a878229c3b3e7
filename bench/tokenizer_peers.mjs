// tokenizer_peers.mjs — the peers of bench_tokenizer.c, on the same text:
// tiktoken (npm `tiktoken`, its WASM build) encoding with gpt2 and
// cl100k_base, Hugging Face tokenizers (npm `@anush008/tokenizers`, native
// Rust bindings) encoding with GPT-2's files and training a 30k BPE
// vocabulary (its default BpeTrainer: vocab_size 30000) with a byte-level
// pre-tokenizer, on 1 and 2 threads (RAYON_NUM_THREADS).
//
// The packages are installed on first use into a cache folder outside the
// project ($GL_BENCH_DIR, default ~/.cache/gptline-bench). Prints lines
// "PEER key value" that bench_tokenizer parses; anything else is shown.
//
//   node bench/tokenizer_peers.mjs CORPUS DATA_DIR
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [corpus, data] = process.argv.slice(2);
const cache = process.env.GL_BENCH_DIR || path.join(os.homedir(), '.cache', 'gptline-bench');
fs.mkdirSync(cache, { recursive: true });
const req = createRequire(path.join(cache, 'package.json'));
const pkgs = ['tiktoken@1.0.22', '@anush008/tokenizers@0.6.0'];
try {
  req.resolve('tiktoken');
  req.resolve('@anush008/tokenizers');
} catch {
  try {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefix', cache, ...pkgs], { stdio: 'ignore' });
  } catch (e) {
    console.log(`peers unavailable: npm install into ${cache} failed (${e.message.split('\n')[0]})`);
    process.exit(0);
  }
}
// best of n runs: [wall seconds, CPU seconds (this process), result]
const best = (n, f) => {
  let b = Infinity, bc = Infinity, r;
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
    r = f();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0), dc = (c.user + c.system) / 1e6;
    if (dt < b) b = dt;
    if (dc < bc) bc = dc;
  }
  return [b, bc, r];
};

if (process.argv[4] === '--train') {
  // child: one HF training run (RAYON_NUM_THREADS set by the parent)
  const hf = req('@anush008/tokenizers');
  const tk = new hf.Tokenizer(hf.BPE.empty());
  tk.setPreTokenizer(hf.byteLevelPreTokenizer(false, true));
  const t0 = process.hrtime.bigint();
  tk.train([corpus]);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`TRAIN ${dt} ${tk.getVocabSize()}`);
  process.exit(0);
}

const text = fs.readFileSync(corpus, 'utf8');
const mb = Buffer.byteLength(text) / 1e6;
const { get_encoding } = req('tiktoken');
for (const [name, key] of [['gpt2', 'gpt2'], ['cl100k_base', 'cl100k']]) {
  const enc = get_encoding(name);
  const [dt, dc, ids] = best(2, () => enc.encode_ordinary(text));
  console.log(`PEER tiktoken_${key} ${(mb / dt).toFixed(3)}`);
  console.log(`PEER tiktoken_${key}_cpu ${(mb / dc).toFixed(3)}`);
  console.log(`PEER tiktoken_${key}_tokens ${ids.length}`);
  enc.free();
}

const hf = req('@anush008/tokenizers');
{
  const model = await hf.BPE.fromFile(path.join(data, 'tokenizers/vocab/gpt2/encoder.json'),
                                      path.join(data, 'tokenizers/vocab/gpt2/vocab.bpe'));
  const tk = new hf.Tokenizer(model);
  tk.setPreTokenizer(hf.byteLevelPreTokenizer(false, true));
  // HF is slow: time the first 2 MB (whole lines) only.
  const part = text.slice(0, 2000000);
  const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
  await tk.encode(part);
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0), dc = (c.user + c.system) / 1e6;
  console.log(`PEER hf_gpt2 ${(Buffer.byteLength(part) / 1e6 / dt).toFixed(3)}`);
  console.log(`PEER hf_gpt2_cpu ${(Buffer.byteLength(part) / 1e6 / dc).toFixed(3)}`);
}
for (const th of [1, 2]) {
  const r = spawnSync(process.execPath, [process.argv[1], corpus, data, '--train'],
                      { env: { ...process.env, RAYON_NUM_THREADS: String(th), TOKENIZERS_PARALLELISM: 'true' },
                        encoding: 'utf8' });
  const m = /TRAIN (\S+) (\d+)/.exec(r.stdout || '');
  if (m) console.log(`PEER hf_train_${th} ${m[1]}`);
  else console.log(`HF training failed: ${(r.stderr || '').slice(0, 200)}`);
}
