// The browser hashing modules, run in Node on pixels decoded by Python (PIL): the same pixels
// must give the same PDQ bits and the same views as matcher's Python library, and hashes within
// each conformance row's tolerance. Driven by tests/web/test_hashing_node.py, which writes the
// fixtures and names their folder in HASHJS_FIXTURES; without it the file-based tests skip.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { blobDigests, bytesDigests } from "../static/hashing/digests.js";
import { cropBox, enrollViews, fmtG, pyRound, viewNames, PROFILES } from "../static/hashing/views.js";
import { distance, pdq } from "../static/hashing/pdq.js";
import { phash } from "../static/hashing/phash.js";
import { jpegDraftScale, reduceRGBA, sniff } from "../static/hashing/decode.js";

const FIXTURES = process.env.HASHJS_FIXTURES;
const manifest = FIXTURES ? JSON.parse(readFileSync(join(FIXTURES, "manifest.json"), "utf8")) : null;
const noFixtures = manifest ? false : "HASHJS_FIXTURES not set (run through pytest)";

const pixels = (r) => readFileSync(join(FIXTURES, r.file));

test("Python's round and format", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, 2.4999, 2.5001].map(pyRound), [0, 2, 2, 0, 2, 3]);
  assert.deepEqual([0, 1, 0.5, 1 / 6, 2 / 3, 0.975, -5, 1.5].map(fmtG), [
    "0", "1", "0.5", "0.166667", "0.666667", "0.975", "-5", "1.5",
  ]);
  assert.deepEqual(cropBox(481, 321, 0.9, 0.5, 0.5), [24, 16, 433, 289]);
  assert.equal(viewNames(PROFILES.enroll).length, 100);
  assert.equal(viewNames(PROFILES["enroll-wide"]).length, 223);
  assert.equal(viewNames(PROFILES.enroll).filter((n) => n.startsWith("mcrop")).length, 20);
});

test("the PDQ conformance rows, from Python-decoded pixels", { skip: noFixtures }, () => {
  assert.ok(manifest.pdq.length > 0 || manifest.pdq_skipped);
  for (const r of manifest.pdq) {
    const h = pdq(pixels(r), r.width, r.height, 3);
    const d = distance(h.hex, r.expected);
    assert.ok(d <= r.max_distance, `${r.path}: ${d} bits from the reference (${r.max_distance} allowed)`);
    if (r.quality !== null) assert.equal(h.quality, r.quality, `${r.path}: quality`);
    // Same pixels, same arithmetic: the same bits and quality as the Python library.
    assert.equal(h.hex, r.python, `${r.path}: differs from matcher's Python PDQ`);
    assert.equal(h.quality, r.python_quality, `${r.path}: quality differs from Python's`);
    assert.equal(phash(pixels(r), r.width, r.height, 3), r.phash, `${r.path}: pHash differs`);
  }
});

test("the enroll views match Python's view by view", { skip: noFixtures }, () => {
  assert.ok(manifest.views.length > 0);
  for (const r of manifest.views) {
    const img = { data: pixels(r), width: r.width, height: r.height, channels: 3 };
    let calls = 0;
    const js = enrollViews(img, PROFILES[r.profile], () => calls++);
    assert.ok(calls >= js.length, "progress is told per view");
    assert.equal(phash(img.data, img.width, img.height, 3), r.phash, `${r.name}: pHash`);
    const got = Object.fromEntries(js.map((v) => [v.name, [v.hex, v.quality]]));
    assert.deepEqual(Object.keys(got), Object.keys(r.views), `${r.name}: view names and order`);
    for (const [name, [hex, quality]] of Object.entries(r.views)) {
      assert.equal(distance(got[name][0], hex), 0, `${r.name} ${name}: bits differ`);
      assert.equal(got[name][1], quality, `${r.name} ${name}: quality`);
    }
  }
});

test("MD5 and SHA-256, streamed in chunks of any size", { skip: noFixtures }, async () => {
  for (const r of manifest.digests) {
    const bytes = new Uint8Array(readFileSync(join(FIXTURES, r.file)));
    assert.deepEqual(bytesDigests(bytes), { md5: r.md5, sha256: r.sha256 }, `${r.file} in one piece`);
    for (const chunk of [1, 63, 64, 65, 4096]) {
      if (bytes.length > 5000 && chunk < 64) continue;
      const got = await blobDigests(new Blob([bytes]), { chunk });
      assert.deepEqual(got, { md5: r.md5, sha256: r.sha256 }, `${r.file} in chunks of ${chunk}`);
    }
  }
});

test("file kinds and the decode sizes of Python", () => {
  const b = (...xs) => Uint8Array.from(xs);
  const ascii = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));
  assert.equal(sniff(b(0xff, 0xd8, 0xff, 0xe0)), "jpeg");
  assert.equal(sniff(ascii("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")), "heic");
  assert.equal(sniff(ascii("\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif")), "avif");
  assert.equal(sniff(ascii("\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomiso2")), "video");
  assert.equal(sniff(ascii("hello world, not an image")), null);
  // PIL's draft: the largest of 1/2, 1/4, 1/8 keeping both sides >= 384.
  assert.equal(jpegDraftScale(4032, 3024), 4);
  assert.equal(jpegDraftScale(800, 502), 1);
  assert.equal(jpegDraftScale(3100, 3100), 8);
  const r = reduceRGBA(new Uint8ClampedArray(5 * 3 * 4).fill(200), 5, 3, 2);
  assert.deepEqual([r.width, r.height, r.data[0], r.data[r.data.length - 4]], [3, 2, 200, 200]);
});
