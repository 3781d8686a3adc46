// sha1(u + API secret), the hash MOR's API wants: SubtleCrypto where the page is a secure context
// (https, localhost), a small fallback for plain-http pages on other hosts.
"use strict";
(() => {
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

  async function sha1hex(text) {
    const data = new TextEncoder().encode(text);
    if (window.crypto && crypto.subtle) {  // secure contexts only (https, localhost)
      return hex(new Uint8Array(await crypto.subtle.digest("SHA-1", data)));
    }
    return sha1Plain(data);
  }

  // Fallback for plain-http pages on other hosts, where SubtleCrypto is not exposed.
  function sha1Plain(bytes) {
    const len = bytes.length, size = ((len + 9 + 63) >> 6) << 6;
    const m = new Uint8Array(size);
    m.set(bytes);
    m[len] = 0x80;
    const dv = new DataView(m.buffer);
    dv.setUint32(size - 4, (len * 8) >>> 0);
    dv.setUint32(size - 8, Math.floor(len / 0x20000000));
    let h0 = 0x67452301, h1 = 0xefcdab89, h2 = 0x98badcfe, h3 = 0x10325476, h4 = 0xc3d2e1f0;
    const w = new Uint32Array(80);
    for (let off = 0; off < size; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = dv.getUint32(off + i * 4);
      for (let i = 16; i < 80; i++) { const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]; w[i] = (x << 1) | (x >>> 31); }
      let a = h0, b = h1, c = h2, d = h3, e = h4;
      for (let i = 0; i < 80; i++) {
        let f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
        else { f = b ^ c ^ d; k = 0xca62c1d6; }
        const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
        e = d; d = c; c = ((b << 30) | (b >>> 2)) >>> 0; b = a; a = t;
      }
      h0 = (h0 + a) >>> 0; h1 = (h1 + b) >>> 0; h2 = (h2 + c) >>> 0; h3 = (h3 + d) >>> 0; h4 = (h4 + e) >>> 0;
    }
    return [h0, h1, h2, h3, h4].map((v) => v.toString(16).padStart(8, "0")).join("");
  }

  window.ActiveCallsAuth = { sha1hex };
})();
