// The agent inbox's JSON, as kefu's inbox routes give it (docs/api.md "Agent inbox",
// src/server/inbox/): the list (GET /admin/inbox and the stream's `snapshot`),
// one conversation (GET /admin/inbox/{id}) and what the stream pushes.

/** Where a conversation is: with the bot, waiting for a person, with a person, closed. */
export type ConvState = "waiting" | "agent" | "bot" | "resolved";

/** The states in the order the tabs show them (waiting first: that is the work). */
export const STATES: ConvState[] = ["waiting", "agent", "bot", "resolved"];

/** One conversation in the list. Times are Unix milliseconds. */
export interface Summary {
  id: string;
  state: ConvState;
  /** Why it left the bot: rule, low_confidence, anger, repeated_failure, asked, agent. */
  kind?: string | null;
  reason?: string | null;
  group?: string | null;
  agent?: string | null;
  since?: number | null;
  assigned_at?: number | null;
  waiting_ms?: number | null;
  last_text?: string | null;
  /** Photos the last message carried. */
  last_images?: number;
  last_role?: string | null;
  last_at?: number | null;
  emotion?: string | null;
  angry?: boolean;
  vip?: boolean;
  segment?: string | null;
  turns?: number;
  queued?: number;
  unread?: number;
}

/** A photo a customer sent (the image store's id; `GET /admin/images/{id}` serves it). */
export interface ImageRef {
  id: string;
  kind: string;
  width: number;
  height: number;
  bytes: number;
  /** What the vision model saw, when one is configured. */
  description?: string | null;
}

/** A message of the transcript. */
export interface Message {
  seq: number;
  role: "user" | "bot" | "agent" | string;
  text: string;
  at: number;
  /** The photos a customer's message carried. */
  images?: ImageRef[];
}

export interface TraceStep {
  stage: string;
  detail: string;
}

/** How the bot answered one customer message. */
export interface BotTurn {
  seq: number;
  message?: string;
  reply?: string;
  source?: string;
  rule?: string | null;
  faq?: string | null;
  flow?: string | null;
  step?: string | null;
  promotion?: string | null;
  intent?: string | null;
  confidence?: number | null;
  emotion?: string | null;
  trace?: TraceStep[];
}

export interface Note {
  agent?: string | null;
  text: string;
  at: number;
}

/** A queue of agents, with how many wait in it and who serves it. */
export interface Group {
  name: string;
  label?: string | null;
  open?: boolean;
  waiting?: number;
  agents?: number;
}

export interface AgentInfo {
  name: string;
  online?: boolean;
  holding?: number;
}

/** GET /admin/inbox, and the stream's `snapshot`. */
export interface InboxList {
  conversations: Summary[];
  counts?: Partial<Record<ConvState, number>>;
  groups?: Group[];
  agents?: AgentInfo[];
  me?: string | null;
}

/** GET /admin/inbox/{id}. */
export interface Detail {
  summary: Summary;
  messages: Message[];
  turns: BotTurn[];
  notes: Note[];
  profile?: Record<string, unknown> | null;
  context?: Record<string, unknown> | null;
  flow?: { name?: string; awaiting?: string | null } | null;
  slots?: Record<string, unknown> | null;
  takeover?: { agent?: string | null; paused_flow?: { name?: string } | null; queued?: string[] } | null;
  resolved?: { outcome?: string; agent?: string | null; at?: number } | null;
  feedback?: { score?: number; comment?: string } | null;
}

/** GET /admin/inbox/{id}/suggest: what the rules would answer now (`reply` empty: nothing confident). */
export interface Suggestion {
  message?: string;
  reply: string;
  source?: string;
  rule?: string | null;
  faq?: string | null;
  flow?: string | null;
  intent?: string | null;
  confidence?: number | null;
  model?: boolean;
}

/** A canned reply (rules/kb/canned.yaml). */
export interface Canned {
  title: string;
  text: string;
  tags?: string[];
  group?: string | null;
}
