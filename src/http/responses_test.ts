/** Header values: any text becomes a valid value a person can still read. */
import { assert, assertEquals } from "../../tests/support/assert.ts";
import { headerValue } from "./responses.ts";

Deno.test("headerValue: every string becomes a valid header value a person can read", () => {
  const samples = [
    "plain ascii",
    "Latin-1: données, Größe, ½",
    "ellipsis … and “quotes” – dashes",
    "数据/文件.bin",
    "emoji 🚀 and a lone surrogate \ud800 here",
    "controls \u0000\r\n\t\u007f\u0085 gone",
    "x".repeat(5000),
    Array.from({ length: 2000 }, (_, i) => String.fromCodePoint(i * 37 % 0x10ffff)).join(""),
  ];
  for (const text of samples) {
    const value = headerValue(text);
    new Headers({ "x-test": value }); // throws on an invalid value
    assert(value.length <= 2048);
    assert(![...value].some((c) => c.charCodeAt(0) > 0xff || c.charCodeAt(0) < 0x20));
  }
  assertEquals(headerValue("Latin-1: données, Größe, ½"), "Latin-1: données, Größe, ½");
  assertEquals(
    headerValue("ellipsis … and “quotes” – dashes"),
    'ellipsis ... and "quotes" - dashes',
  );
  assertEquals(headerValue("数据/文件.bin"), "\\u6570\\u636e/\\u6587\\u4ef6.bin");
  assertEquals(headerValue("🚀"), "\\ud83d\\ude80");
  assertEquals(headerValue("a\r\nb"), "a  b");
  assertEquals(headerValue("x".repeat(5000)).length, 2048);
});
