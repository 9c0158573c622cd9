import assert from "node:assert/strict";
import { type TokenSink, TokenStream } from "../mod.ts";
import { within } from "./_helpers.ts";

Deno.test("TokenStream starts on the first read and yields tokens in order", async () => {
  let started = 0;
  const stream = new TokenStream((sink) => {
    started++;
    queueMicrotask(() => {
      sink.token("a");
      sink.token("b");
      sink.close();
    });
    return () => {};
  });
  assert.equal(started, 0, "nothing is sent before the first read");
  const tokens: string[] = [];
  for await (const token of stream) tokens.push(token);
  assert.deepEqual(tokens, ["a", "b"]);
  assert.equal(started, 1);
});

Deno.test("TokenStream: a break stops listening, and late deliveries are ignored", async () => {
  let stopped = 0;
  let sink: TokenSink | undefined;
  const stream = new TokenStream((s) => {
    sink = s;
    queueMicrotask(() => s.token("first"));
    return () => stopped++;
  });
  const iterator = stream[Symbol.asyncIterator]();
  const seen: string[] = [];
  // The same steps as `for await (...) { ...; break; }`: read one, then return().
  const first = await iterator.next();
  if (!first.done) seen.push(first.value);
  assert.deepEqual(await iterator.return!(), { done: true, value: undefined });
  assert.equal(stopped, 1);
  sink!.token("late");
  sink!.error(new Error("a late failure"));
  sink!.close();
  // Nothing that arrives after the break is ever read, and the stream stays ended.
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  assert.deepEqual(seen, ["first"]);
  assert.equal(stopped, 1, "stop is called once");
});

Deno.test("TokenStream: a token queued but unread when the reader breaks is dropped", async () => {
  const stream = new TokenStream((sink) => {
    sink.token("a");
    sink.token("b");
    sink.token("c");
    return () => {};
  });
  const iterator = stream[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { done: false, value: "a" });
  await iterator.return!();
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
});

Deno.test("TokenStream: after the readable is cancelled, late tokens never reach it", async () => {
  let sink: TokenSink | undefined;
  const stream = new TokenStream((s) => {
    sink = s;
    s.token("x");
    return () => {};
  });
  const reader = stream.readable.getReader();
  assert.deepEqual(await reader.read(), { done: false, value: "x" });
  await reader.cancel();
  sink!.token("late");
  sink!.close();
  assert.deepEqual(await reader.read(), { done: true, value: undefined });
});

Deno.test("TokenStream: an error reaches the iterator, and the readable pipes", async () => {
  const failing = new TokenStream((sink) => {
    queueMicrotask(() => sink.error(new Error("boom")));
    return () => {};
  });
  await assert.rejects(async () => {
    for await (const _ of failing) { /* drain */ }
  }, /boom/);

  const piped = new TokenStream((sink) => {
    queueMicrotask(() => {
      sink.token("x");
      sink.token("y");
      sink.close();
    });
    return () => {};
  });
  const bytes = await new Response(piped.readable.pipeThrough(new TextEncoderStream())).text();
  assert.equal(bytes, "xy");
});

Deno.test("TokenStream: a start that throws fails the stream before anything is sent", async () => {
  const stream = new TokenStream(() => {
    throw new Error("bad params");
  });
  await assert.rejects(async () => {
    for await (const _ of stream) { /* drain */ }
  }, /bad params/);
});

Deno.test("TokenStream: tokens that arrive before the reader are kept, then the error", async () => {
  const stream = new TokenStream((sink) => {
    sink.token("a");
    sink.token("b");
    sink.error(new Error("late failure"));
    sink.token("ignored");
    return () => {};
  });
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const token of stream) seen.push(token);
  }, /late failure/);
  assert.deepEqual(seen, ["a", "b"], "nothing that arrived before the error is lost");
});

Deno.test("TokenStream: cancel() before the first read means the call is never sent", async () => {
  let started = 0;
  const stream = new TokenStream(() => {
    started++;
    return () => {};
  });
  await stream.cancel();
  for await (const _ of stream) assert.fail("a cancelled stream yields nothing");
  assert.equal(started, 0);
});

Deno.test("TokenStream: read once, one way; a second reader gets a TypeError saying so", () => {
  const stream = new TokenStream(() => () => {});
  stream[Symbol.asyncIterator]();
  assert.throws(() => stream.readable, TypeError);
  assert.throws(() => stream[Symbol.asyncIterator](), /already being read through for await/);
  const piped = new TokenStream(() => () => {});
  assert.equal(piped.readable, piped.readable, "the same readable every time");
  assert.throws(() => piped[Symbol.asyncIterator](), /through readable/);
});

Deno.test("TokenStream: cancelling the readable stops listening", async () => {
  let stopped = 0;
  const stream = new TokenStream((sink) => {
    sink.token("x");
    return () => stopped++;
  });
  const reader = stream.readable.getReader();
  assert.deepEqual(await reader.read(), { done: false, value: "x" });
  await reader.cancel();
  assert.equal(stopped, 1);
});

Deno.test("TokenStream: taking the readable sends nothing; its first read does", async () => {
  let started = 0;
  const stream = new TokenStream((sink) => {
    started++;
    sink.token("t");
    sink.close();
    return () => {};
  });
  const readable = stream.readable;
  // A ReadableStream pulls ahead by its high-water mark: it must be 0 here.
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(started, 0, "no call before the first read");
  const reader = readable.getReader();
  assert.deepEqual(await reader.read(), { done: false, value: "t" });
  assert.equal(started, 1);
  assert.deepEqual(await reader.read(), { done: true, value: undefined });
});

Deno.test("TokenStream: what starts the call, once, and the count without the server's", async (t) => {
  await t.step("readable does not start the call before its first read", async () => {
    let started = 0;
    const stream = new TokenStream((sink) => {
      started++;
      queueMicrotask(() => sink.close());
      return () => {};
    });
    const reader = stream.readable.getReader();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(started, 0, "nothing is sent before the first read");
    assert.deepEqual(await reader.read(), { done: true, value: undefined });
    assert.equal(started, 1);
  });
  await t.step("result after the first read does not start the call again", async () => {
    let started = 0;
    let sink: TokenSink | undefined;
    const stream = new TokenStream((s) => {
      started++;
      sink = s;
      queueMicrotask(() => s.token("a"));
      return () => {};
    });
    const iterator = stream[Symbol.asyncIterator]();
    assert.deepEqual(await iterator.next(), { done: false, value: "a" });
    const result = stream.result;
    assert.equal(started, 1);
    sink!.token("b");
    sink!.close({});
    assert.equal((await result).tokens_generated, 2, "the tokens counted when the server omits it");
    assert.equal((await result).text, "ab");
  });
});

Deno.test("TokenStream: cancel() after the server ended or failed the stream changes nothing", async (t) => {
  await t.step(
    "ended: the call is not stopped again, and the result stays the server's",
    async () => {
      let stopped = 0;
      const stream = new TokenStream((sink) => {
        sink.token("a");
        sink.close({ tokens_generated: 1 });
        return () => stopped++;
      });
      const tokens: string[] = [];
      for await (const token of stream) tokens.push(token);
      await stream.cancel();
      assert.deepEqual(tokens, ["a"]);
      assert.equal(stopped, 0, "a stream the server ended has nothing to stop");
      assert.deepEqual(await within(3000, stream.result, "the result"), {
        tokens_generated: 1,
        text: "a",
      });
    },
  );
  await t.step(
    "failed: the call is not stopped, and the result keeps the server's error",
    async () => {
      let stopped = 0;
      const stream = new TokenStream((sink) => {
        sink.error(new Error("server failed"));
        return () => stopped++;
      });
      await assert.rejects(within(3000, stream.result, "the result"), /server failed/);
      await stream.cancel();
      assert.equal(stopped, 0, "a failed stream has nothing to stop");
      await assert.rejects(within(3000, stream.result, "the result"), /^Error: server failed$/);
    },
  );
});

Deno.test("TokenStream: what the stop function delivers as it runs is dropped, and the result is ABORTED", async () => {
  // A transport may flush a frame it already had while it is being stopped: that frame is late.
  const stream = new TokenStream((sink) => {
    sink.token("a");
    return () => {
      sink.token("late");
      sink.close({ tokens_generated: 9 });
    };
  });
  const iterator = stream[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { done: false, value: "a" });
  await stream.cancel();
  const error = await within(3000, stream.result, "the result").then(
    () => assert.fail("a cancelled stream has no result"),
    (e) => e,
  );
  assert.equal(error.code, "ABORTED");
  assert.deepEqual(await within(3000, iterator.next(), "a read after cancel()"), {
    done: true,
    value: undefined,
  });
});

Deno.test("TokenStream: result.text is every token joined in order, across the 256-token joins", async () => {
  for (const count of [255, 256, 257, 513, 1000]) {
    const sent = Array.from({ length: count }, (_, i) => `t${i} `);
    const stream = new TokenStream((sink) => {
      queueMicrotask(() => {
        for (const token of sent) sink.token(token);
        sink.close({ tokens_generated: count });
      });
      return () => {};
    });
    const read = await within(5_000, Array.fromAsync(stream), "reading the tokens");
    const result = await within(5_000, stream.result, "the stream's result");
    assert.deepEqual(read, sent);
    assert.equal(result.text, sent.join(""), `${count} tokens`);
    assert.equal(result.tokens_generated, count);
  }
});

/** A stream whose tokens the test hands in: `sink()` once a first read has started it. */
function handFed(): { stream: TokenStream; sink: () => TokenSink } {
  let sink: TokenSink | undefined;
  const stream = new TokenStream((s) => {
    sink = s;
    return () => {};
  });
  return { stream, sink: () => sink! };
}

Deno.test("TokenStream: reads asked for before their tokens arrive get them in order", async (t) => {
  await t.step("tokens, then the end", async () => {
    const { stream, sink } = handFed();
    const iterator = stream[Symbol.asyncIterator]();
    const reads = [iterator.next(), iterator.next(), iterator.next(), iterator.next()];
    sink().token("a");
    sink().token("b");
    const early = await within(3000, Promise.all(reads.slice(0, 2)), "the first two reads");
    assert.deepEqual(early, [{ done: false, value: "a" }, { done: false, value: "b" }]);
    sink().token("c");
    sink().close();
    assert.deepEqual(await within(3000, Promise.all(reads.slice(2)), "the last two reads"), [
      { done: false, value: "c" },
      { done: true, value: undefined },
    ]);
    assert.equal((await within(3000, stream.result, "the result")).text, "abc");
  });
  await t.step("a failure reaches every read still waiting", async () => {
    const { stream, sink } = handFed();
    const iterator = stream[Symbol.asyncIterator]();
    const first = iterator.next();
    const waiting = [iterator.next(), iterator.next()];
    sink().token("a");
    assert.deepEqual(await within(3000, first, "the first read"), { done: false, value: "a" });
    const failure = new Error("the server failed");
    sink().error(failure);
    const outcomes = await within(3000, Promise.allSettled(waiting), "the waiting reads");
    assert.deepEqual(outcomes, [
      { status: "rejected", reason: failure },
      { status: "rejected", reason: failure },
    ]);
  });
  await t.step("a cancel ends every read still waiting", async () => {
    const stream = new TokenStream(() => () => {});
    const iterator = stream[Symbol.asyncIterator]();
    const waiting = [iterator.next(), iterator.next()];
    await stream.cancel();
    assert.deepEqual(await within(3000, Promise.all(waiting), "the waiting reads"), [
      { done: true, value: undefined },
      { done: true, value: undefined },
    ]);
  });
});

/**
 * Asks for a read through `iterator.next()` under `name`, and records in `order` the name when
 * it settles, with what it got: reads settle in the order they were asked only if `order` does.
 */
function asker(iterator: AsyncIterator<string>, order: string[]) {
  return (name: string) =>
    iterator.next().then(
      (result) => void order.push(`${name}:${result.done ? "done" : result.value}`),
      (error) => void order.push(`${name}:${(error as Error).message}`),
    );
}

Deno.test("TokenStream: next() calls settle in the order asked, whatever mix of waiting and buffered reads, return() and errors", async (t) => {
  await t.step(
    "a read asked after a token answered the first waits behind the second",
    async () => {
      const { stream, sink } = handFed();
      const order: string[] = [];
      const read = asker(stream[Symbol.asyncIterator](), order);
      const reads = [read("A"), read("B")];
      sink().token("1");
      // Asked right after the token, before anything else ran: B is still first in line.
      reads.push(read("C"));
      sink().token("2");
      sink().token("3");
      await within(3000, Promise.all(reads), "the three reads");
      assert.deepEqual(order, ["A:1", "B:2", "C:3"]);
    },
  );
  await t.step("buffered tokens, then waiting reads, then the end", async () => {
    const { stream, sink } = handFed();
    const order: string[] = [];
    const read = asker(stream[Symbol.asyncIterator](), order);
    const reads = [read("A")];
    sink().token("1");
    sink().token("2");
    reads.push(read("B"), read("C"), read("D"));
    sink().token("3");
    sink().close();
    reads.push(read("E"));
    await within(3000, Promise.all(reads), "the reads");
    assert.deepEqual(order, ["A:1", "B:2", "C:3", "D:done", "E:done"]);
  });
  await t.step(
    "an error after a token: the waiting reads fail in order, the later ones too",
    async () => {
      const { stream, sink } = handFed();
      const order: string[] = [];
      const read = asker(stream[Symbol.asyncIterator](), order);
      const reads = [read("A"), read("B")];
      sink().token("1");
      reads.push(read("C"));
      sink().error(new Error("failed"));
      reads.push(read("D"));
      await within(3000, Promise.all(reads), "the reads");
      assert.deepEqual(order, ["A:1", "B:failed", "C:failed", "D:failed"]);
    },
  );
  await t.step("return() ends the waiting reads in order, before its own answer", async () => {
    const { stream, sink } = handFed();
    const order: string[] = [];
    const iterator = stream[Symbol.asyncIterator]();
    const read = asker(iterator, order);
    const reads = [read("A"), read("B")];
    sink().token("1");
    reads.push(read("C"));
    reads.push(iterator.return!().then((result) => void order.push(`return:${result.done}`)));
    sink().token("late");
    await within(3000, Promise.all(reads), "the reads and return()");
    assert.deepEqual(order, ["A:1", "B:done", "C:done", "return:true"]);
  });
});
