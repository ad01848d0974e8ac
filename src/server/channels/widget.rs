//! The web widget's server side: `GET /widget.js`, CORS for the sites of the channels
//! file, the per-IP limit (part W of issue #24 writes it; this header keeps the module
//! declared meanwhile).
