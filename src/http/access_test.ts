/** Which `X-Forwarded-For` and `X-Request-Id` are believed: only a trusted proxy's. */
import { RequestRecord, TrustedProxies } from "./access.ts";
import { assert, assertEquals } from "../../tests/support/assert.ts";

const request = (headers: Record<string, string>) =>
  new Request("http://cartd.example/x", { headers });

Deno.test("forwarded headers count only from a trusted proxy, and only past the proxies", () => {
  const proxies = new TrustedProxies(["10.0.0.0/8", "2001:db8::1"]);
  const headers = {
    "x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.0.0.2",
    "x-request-id": "r1",
  };

  const direct = new RequestRecord(request(headers), "192.0.2.7", proxies);
  assertEquals(direct.client, "192.0.2.7");
  assert(direct.id !== "r1");

  const proxied = new RequestRecord(request(headers), "10.9.9.9", proxies);
  assertEquals(proxied.client, "203.0.113.9", "the last address no trusted proxy holds");
  assertEquals(proxied.id, "r1");

  const v6 = new RequestRecord(
    request({ "x-forwarded-for": "198.51.100.1" }),
    "2001:db8::1",
    proxies,
  );
  assertEquals(v6.client, "198.51.100.1");

  const garbage = new RequestRecord(
    request({ "x-forwarded-for": "not-an-ip", "x-request-id": 'a"b c' }),
    "10.0.0.1",
    proxies,
  );
  assertEquals(garbage.client, "10.0.0.1");
  assert(garbage.id !== 'a"b c');

  const none = new TrustedProxies([]);
  assertEquals(new RequestRecord(request(headers), "10.0.0.2", none).client, "10.0.0.2");
});
