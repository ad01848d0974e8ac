// Syntax highlighting for kefu's rule language (`.kefu`, grammar/kefu.pest) as a CodeMirror
// StreamLanguage: keywords, names being declared, intent names (dotted paths and patterns),
// strings with `{holes}`, comments, numbers/durations/dates, regexes, and the rhai inside
// backticks and template holes highlighted as code (a nested tokenizer with its own
// keywords, operators and strings). Highlighting only: the server's check is the parser.
import { StreamLanguage, HighlightStyle, syntaxHighlighting, type StringStream } from "@codemirror/language";
import { Tag, tags } from "@lezer/highlight";

/** Every keyword of grammar/kefu.pest (its `kw_*` rules). */
const KEYWORDS = new Set(
  (
    "allow applies as ask alone card pattern confirm block call cancel context else end entity event examples " +
    "fallback fallback_message flag file flow flow_timeout for from goto handoff handoff_message http if " +
    "intent languages key keywords llm mask on otherwise persona order_number pii policy priority promotion " +
    "reask remember forget reply retry rule safety segmented say set shop source start style text threshold " +
    "model_threshold faq_threshold goodbye_message ack_message more_message confirm_again_message " +
    "flow_updated_message upcoming_days max_answers timeout translate timezone to tone temperature top_p " +
    "when queue label hours off_hours waiting within without default_reply words proactive proactive_limit " +
    "quiet_hours opt_out_message quiet limit per day offer image"
  ).split(" "),
);

/** Keywords that open an item: the name after them is being declared. */
const DECLARES = new Set([
  "rule",
  "flow",
  "promotion",
  "policy",
  "style",
  "entity",
  "source",
  "card",
  "shop",
  "queue",
  "proactive",
]);
/** Keywords after which names are intents or intent patterns. */
const INTENTS = new Set(["intent", "on", "applies"]);
/** Keywords after which a name is a slot or a value of the flow. */
const SLOTS = new Set(["ask", "goto", "set", "remember", "forget", "as", "confirm"]);
/** Keywords after which plain names are not intents (`on keywords "..."`, `on entity x`). */
const NOT_INTENT = new Set(["keywords", "entity", "card", "event", "llm", "style", "offer"]);

const RHAI_KEYWORDS = new Set(
  "let const if else while loop for in do until break continue return throw try catch fn private import export as switch this global Fn call curry is_def_var is_def_fn type_of print debug".split(
    " ",
  ),
);
/** Names every rhai expression of a shop can read (docs/language.md, "what scripts see"). */
const RHAI_SCOPE = new Set(
  "message intent confidence entities emotion slots session user order cart product now memory promotions safety language channel event card images image".split(
    " ",
  ),
);

/** Extra tags: rhai code (expressions, template holes) gets a tinted background. */
export const rhaiTag = Tag.define();
export const holeTag = Tag.define();

interface State {
  /** Inside a string: `"` (one line) or `"""`. */
  str: string | null;
  /** Brace depth inside a template hole of that string (0: not in a hole). */
  hole: number;
  /** Inside backticks (rhai). */
  expr: boolean;
  /** Inside a rhai block comment. */
  rhaiComment: boolean;
  /** The last rhai token was a `.` (the next name is a property). */
  dot: boolean;
  /** What the next plain names are (after `on`, `rule`, `ask`...). */
  expect: "intent" | "def" | "slot" | null;
  /** The last top-level token closed a string (a language code may follow: `"…" en "…"`). */
  afterString: boolean;
}

const NAME = /^[\p{L}\p{M}\p{N}_-]+/u;
const INTENT_PATH = /^[\p{L}\p{M}\p{N}_-]+(?:\.[\p{L}\p{M}\p{N}_-]+)*(?:\.\*)?/u;

/** One rhai token; `extra` is added to the style ("rhai" or "hole"). */
function rhaiToken(stream: StringStream, state: State, extra: string): string | null {
  if (stream.eatSpace()) return extra;
  if (state.rhaiComment) {
    if (stream.match(/^.*?\*\//)) state.rhaiComment = false;
    else stream.match(/^[^`]*/);
    return "comment " + extra;
  }
  if (stream.match("/*")) {
    state.rhaiComment = true;
    return "comment " + extra;
  }
  if (stream.match(/^\/\/[^`]*/)) return "comment " + extra;
  if (stream.match(/^"(?:\\.|[^"\\`\n])*"?/)) return "string " + extra;
  if (stream.match(/^'(?:\\.|[^'\\`\n])'?/)) return "string " + extra;
  if (stream.match(/^\d+(?:\.\d+)?(?:e[+-]?\d+)?/i)) return "number " + extra;
  if (stream.match("()")) return "atom " + extra;
  const dot = state.dot;
  state.dot = false;
  const m = stream.match(NAME) as RegExpMatchArray | null;
  if (m) {
    const w = m[0];
    if (dot) return "propertyName " + extra;
    if (w === "true" || w === "false") return "bool " + extra;
    if (RHAI_KEYWORDS.has(w)) return "keyword " + extra;
    if (stream.match(/^\s*\(/, false)) return "variableName.function " + extra;
    if (RHAI_SCOPE.has(w)) return "variableName.standard " + extra;
    return "variableName " + extra;
  }
  if (stream.match(/^\?\./) || stream.eat(".")) {
    state.dot = true;
    return "operator " + extra;
  }
  if (stream.match(/^[-+*\/%=!<>&|^?:~]+/)) return "operator " + extra;
  if (stream.match(/^[()[\],;]/)) return "punctuation " + extra;
  stream.next();
  return extra;
}

/** A token inside a string (text, escapes, `{{`, holes). */
function stringToken(stream: StringStream, state: State): string | null {
  if (state.hole > 0) {
    if (stream.eat("}")) {
      state.hole--;
      return state.hole === 0 ? "brace hole" : "brace hole";
    }
    if (stream.eat("{")) {
      state.hole++;
      return "brace hole";
    }
    // a quoted string inside the hole; for a one-line string it must close on the line
    if (stream.match(/^"(?:\\.|[^"\\\n])*"/)) return "string hole";
    if (state.str === '"' && stream.peek() === '"') {
      // an unclosed quote in a hole: the string ends here
      state.hole = 0;
      stream.next();
      state.str = null;
      return "string";
    }
    return rhaiToken(stream, state, "hole");
  }
  if (state.str === '"""' && stream.match('"""')) {
    state.str = null;
    state.afterString = true;
    return "string";
  }
  if (state.str === '"' && stream.eat('"')) {
    state.str = null;
    state.afterString = true;
    return "string";
  }
  if (stream.match("{{") || stream.match("}}")) return "string escape";
  if (state.str === '"' && stream.match(/^\\./)) return "string escape";
  if (stream.eat("{")) {
    state.hole = 1;
    state.dot = false;
    return "brace hole";
  }
  if (stream.match(/^[^{}"\\]+/)) return "string";
  stream.next();
  return "string";
}

/** The `.kefu` tokenizer. */
function token(stream: StringStream, state: State): string | null {
  if (stream.sol()) {
    // a one-line string that did not close is over at the line's end (the check says so)
    if (state.str === '"') {
      state.str = null;
      state.hole = 0;
    }
    if (!state.str && !state.expr) state.expect = null;
  }
  if (state.str) return stringToken(stream, state);
  if (state.expr) {
    if (!state.rhaiComment && stream.eat("`")) {
      state.expr = false;
      return "meta rhai";
    }
    return rhaiToken(stream, state, "rhai");
  }
  if (stream.eatSpace()) return null;
  if (stream.match(/^#.*/)) return "comment";
  const afterString = state.afterString;
  state.afterString = false;
  // a language code before a text's translation: `"亲，包邮哦" en "Free shipping!"`
  if (afterString && stream.match(/^[A-Za-z]{2,3}(?![\p{L}\p{M}\p{N}_-])/u, false)) {
    const code = stream.match(/^[A-Za-z]{2,3}/) as RegExpMatchArray;
    if (!KEYWORDS.has(code[0])) return "attributeName";
    stream.backUp(code[0].length);
  }
  if (stream.match('"""')) {
    state.str = '"""';
    return "string";
  }
  if (stream.eat('"')) {
    state.str = '"';
    return "string";
  }
  if (stream.eat("`")) {
    state.expr = true;
    state.dot = false;
    return "meta rhai";
  }
  if (stream.match(/^\/(?:\\.|[^/\\\n])+\/[a-z]*/)) return "regexp";
  if (stream.match(/^\d{4}-\d{2}-\d{2}(?:\s+\d{2}:\d{2}(?::\d{2})?)?/)) return "number";
  if (stream.match(/^\d{2}:\d{2}(?::\d{2})?/)) return "number";
  if (stream.match(/^\d+(?:ms|s|m|h)(?![\p{L}\p{M}\p{N}_-])/u)) return "number";
  if (stream.match(/^-?\d+(?:\.\d+)?(?![\p{L}\p{M}_-])/u)) return "number";
  if (stream.match("=>")) return "operator";
  if (stream.eat("=")) return "operator";
  if (stream.eat("{")) {
    state.expect = null;
    return "brace";
  }
  if (stream.eat("}")) return "brace";
  if (stream.eat("[") || stream.eat("]")) return "squareBracket";
  if (stream.eat(",")) return "separator";
  if (stream.eat("*")) return state.expect === "intent" ? "typeName" : "operator";
  const m = stream.match(INTENT_PATH) as RegExpMatchArray | null;
  if (m) {
    const w = m[0];
    if (w.includes(".")) return "typeName";
    if (KEYWORDS.has(w)) {
      if (DECLARES.has(w)) state.expect = "def";
      else if (INTENTS.has(w)) state.expect = "intent";
      else if (SLOTS.has(w)) state.expect = "slot";
      else if (NOT_INTENT.has(w)) state.expect = null;
      return DECLARES.has(w) || w === "intent" || w === "fallback" || w === "safety" ? "keyword definitionKeyword" : "keyword";
    }
    if ((w === "yes" || w === "no") && state.expect === "intent") {
      state.expect = null;
      return "atom";
    }
    if (state.expect === "def") {
      state.expect = null;
      return "variableName.definition";
    }
    if (state.expect === "slot") {
      state.expect = null;
      return "variableName.special";
    }
    if (state.expect === "intent") return "typeName";
    return "variableName";
  }
  stream.next();
  return null;
}

/** The `.kefu` language. */
export const kefuLanguage = StreamLanguage.define<State>({
  name: "kefu",
  startState: () => ({ str: null, hole: 0, expr: false, rhaiComment: false, dot: false, expect: null, afterString: false }),
  copyState: (s) => ({ ...s }),
  token,
  blankLine: (s) => {
    if (s.str === '"') {
      s.str = null;
      s.hole = 0;
    }
  },
  indent: () => null,
  languageData: { commentTokens: { line: "#" }, closeBrackets: { brackets: ["(", "[", "{", '"', "`"] } },
  tokenTable: { rhai: rhaiTag, hole: holeTag },
});

/** Colours for the tags above, on top of the default highlight style. */
export const kefuHighlight = syntaxHighlighting(
  HighlightStyle.define([
    { tag: rhaiTag, backgroundColor: "rgba(112, 84, 196, 0.07)" },
    { tag: holeTag, backgroundColor: "rgba(210, 150, 20, 0.13)" },
    { tag: tags.definitionKeyword, color: "#7a1fa2", fontWeight: "600" },
    { tag: tags.keyword, color: "#7a1fa2" },
    { tag: tags.typeName, color: "#0b6e99" },
    { tag: tags.definition(tags.variableName), color: "#0d47a1", fontWeight: "600" },
    { tag: tags.special(tags.variableName), color: "#00695c" },
    { tag: tags.standard(tags.variableName), color: "#ad1457" },
    { tag: tags.function(tags.variableName), color: "#3949ab" },
    { tag: tags.propertyName, color: "#37474f" },
    { tag: tags.string, color: "#2e7d32" },
    { tag: tags.escape, color: "#e65100" },
    { tag: tags.comment, color: "#8a8f98", fontStyle: "italic" },
    { tag: tags.number, color: "#c62828" },
    { tag: tags.regexp, color: "#bf360c" },
    { tag: [tags.bool, tags.atom], color: "#6a1b9a" },
    { tag: tags.meta, color: "#7054c4", fontWeight: "700" },
    { tag: tags.operator, color: "#5d4037" },
    { tag: tags.attributeName, color: "#b45309", fontWeight: "600" },
  ]),
);
