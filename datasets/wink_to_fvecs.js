// SPDX-License-Identifier: MIT
// wink_to_fvecs.js IN.json OUT.fvecs: the wink embeddings JSON ({words, vectors: {w: [100 values, norm, index]}})
// as fvecs rows in the package's word order (glove.6B frequency order).
const fs = require("fs");
const [src, dst] = process.argv.slice(2);
const j = JSON.parse(fs.readFileSync(src, "utf8"));
const d = j.dimensions, n = j.words.length;
const buf = Buffer.alloc(n * (4 + 4 * d));
j.words.forEach((w, i) => {
    const v = j.vectors[w], o = i * (4 + 4 * d);
    if (!v || v.length < d) throw new Error(`word ${w}: missing or short vector`);
    buf.writeInt32LE(d, o);
    for (let t = 0; t < d; t++) buf.writeFloatLE(v[t], o + 4 + 4 * t);
});
fs.writeFileSync(dst, buf);
console.log(`${dst}: ${n} x ${d}`);
