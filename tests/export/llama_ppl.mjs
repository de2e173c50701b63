// llama.cpp (through its official Node.js bindings, node-llama-cpp) loads a GGUF, tokenizes a
// text and scores it: perplexity over non-overlapping windows of --ctx tokens (trailing partial
// window dropped, no BOS inserted, every position but the first of a window scored: the same
// convention as Quantbench's eval::ScoreMode::All). Prints one JSON object on stdout:
//   {"ok":true,"tokens":[ids...],"perplexity":..,"windows":..,"tokens_scored":..}
// or {"ok":false,"error":"..."} with exit code 1. CPU only, prebuilt binaries only.
//
//   node llama_ppl.mjs --model FILE.gguf --text eval.txt [--ctx 128] [--max-windows N] [--threads 1]
// NODE_PATH-style lookup: pass the node_modules directory in QB_NODE_MODULES.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

function fail(message) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(message) }) + "\n");
    process.exit(1);
}

async function loadBindings() {
    const modules = process.env.QB_NODE_MODULES;
    if (!modules) return import("node-llama-cpp");
    const require = createRequire(path.join(modules, "noop.js"));
    let entry;
    try {
        entry = require.resolve("node-llama-cpp");
    } catch (e) {
        fail(`node-llama-cpp is not installed in ${modules}: run packaging/bootstrap.sh --tests (${e.message})`);
    }
    return import(pathToFileURL(entry).href);
}

const modelPath = arg("model");
const textPath = arg("text");
const ctx = Number(arg("ctx", "128"));
const maxWindows = Number(arg("max-windows", "0"));
// Few threads: llama.cpp's workers spin, and test machines are shared.
const threads = Number(arg("threads", "1"));
if (!modelPath || !textPath) fail("usage: llama_ppl.mjs --model FILE.gguf --text FILE [--ctx N]");

try {
    const { getLlama, LlamaLogLevel } = await loadBindings();
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
    const text = readFileSync(textPath, "utf8");
    const tokens = Array.from(model.tokenize(text, false));
    const context = await model.createContext({ contextSize: ctx, batchSize: ctx, sequences: 1, flashAttention: false, threads });
    const sequence = context.getSequence();
    let windows = Math.floor(tokens.length / ctx);
    if (maxWindows > 0) windows = Math.min(windows, maxWindows);
    let nll = 0;
    let scored = 0;
    for (let w = 0; w < windows; ++w) {
        const ids = tokens.slice(w * ctx, (w + 1) * ctx);
        await sequence.clearHistory();
        const input = ids.map((id, j) =>
            j + 1 < ctx
                ? [id, { generateNext: { logits: { filter: { tokens: [ids[j + 1]], includeTop: 1 } }, totalLogitWeight: true } }]
                : id);
        const out = await sequence.controlledEvaluate(input);
        for (let j = 0; j + 1 < ctx; ++j) {
            const next = out[j]?.next;
            if (!next || !next.logits || next.totalLogitWeight === undefined) fail(`no logits at window ${w} position ${j}`);
            let maxLogit = -Infinity; // includeTop: 1 puts the highest logit in the map
            for (const v of next.logits.values()) maxLogit = Math.max(maxLogit, v);
            const logit = next.logits.get(ids[j + 1]);
            const logProb = logit - maxLogit - Math.log(next.totalLogitWeight);
            nll -= logProb;
            ++scored;
        }
    }
    const result = {
        ok: true,
        tokens,
        windows,
        tokens_scored: scored,
        perplexity: Math.exp(nll / scored),
    };
    process.stdout.write(JSON.stringify(result) + "\n");
    await context.dispose();
    await model.dispose();
    await llama.dispose();
} catch (e) {
    fail(e?.stack ?? e);
}
