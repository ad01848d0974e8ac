// Server-sent events read from a fetch response's body (EventSource cannot POST): each
// event's name and its data, in order, as they arrive.

export interface SseEvent {
  event: string;
  data: string;
}

/** Calls `on` for each event of `body` until it ends. */
export async function readEvents(body: ReadableStream<Uint8Array>, on: (e: SseEvent) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buf += decoder.decode(value, { stream: true });
    // Events end with a blank line; a CRLF stream is read the same.
    buf = buf.replace(/\r\n?/g, "\n");
    let cut: number;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment (heartbeat)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) on({ event, data: data.join("\n") });
    }
    if (done) return;
  }
}
