//! Prints the events of an event stream as JSON lines.
//!
//! ```text
//! cargo run --example tail -- [OPTIONS] http://127.0.0.1:8080/events
//! cargo run --example tail -- [--last-event-id ID] [--comments] [--max-events N]
//!                               [--max-event-size BYTES] -
//! ```
//!
//! A URL is followed with [`stdsse::client::Client`], reconnecting as a
//! browser's `EventSource` does (with `Last-Event-ID`, honouring the
//! server's `retry:`, retrying a `5xx` or `429` answer after its
//! `Retry-After`). Standard error shows each connection's status and final
//! URL (after redirects), `tail: connected: 200 http://host:port/path`, and
//! each reconnect's reason and wait. `-` reads the stream from standard
//! input. Every dispatched event is printed as one JSON object per line,
//! flushed at once:
//!
//! ```text
//! {"type":"message","data":"hello","id":"42"}
//! ```
//!
//! `id` is the last event ID at dispatch. Comments are printed only with
//! `--comments`, as `{"comment":"text"}`. An event whose data and type
//! together are over `--max-event-size` bytes (default 16 MiB, so 16 MiB of
//! data is accepted), or a line 64 bytes longer, is reported on standard
//! error and skipped.
//!
//! Options for a URL: `--header 'Name: value'` (repeatable), `--method M`,
//! `--data TEXT` (the request body, sent again on every reconnect; it makes
//! the method `POST` unless `--method` says otherwise).
//!
//! Exit status: 0 when the stream ends for good (end of the input, a `204
//! No Content`, or `--max-events` reached); 1 when the connection fails for
//! good (a status other than 200 that is not retried, a content type other than
//! `text/event-stream`, a redirect without `Location`, too many redirects,
//! an `https://` URL), with a one-line reason on standard error, or on a
//! read or write error; 2 on a usage error.

use std::env;
use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;

use stdsse::client::{Client, ClientError, Disconnect, Received};
use stdsse::parser::{Item, MessageEvent, Parser};

const USAGE: &str = "usage: tail [OPTIONS] URL
       tail [--last-event-id ID] [--comments] [--max-events N] [--max-event-size BYTES] -
  URL                      follow an http:// event stream, reconnecting
  -                        read the event stream from standard input
  --last-event-id ID       start from this last event ID
  --comments               also print comments as {\"comment\":\"...\"}
  --max-events N           exit after N events
  --max-event-size BYTES   skip events whose data and type are larger
                           (default 16777216: 16 MiB)
  --header 'Name: value'   add a request header (repeatable; URL only)
  --method M               the request method (URL only; default GET)
  --data TEXT              the request body, resent on every reconnect
                           (URL only; the method is then POST by default)";

/// Where the stream comes from.
enum Source {
    Stdin,
    Url(String),
}

struct Options {
    source: Source,
    last_event_id: String,
    comments: bool,
    max_events: Option<u64>,
    max_event_size: Option<usize>,
    headers: Vec<(String, String)>,
    method: Option<String>,
    data: Option<String>,
}

/// Why tail stops with a non-zero status.
enum Failure {
    Io(io::Error),
    Client(ClientError),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("tail: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut printer = Printer {
        out: io::stdout().lock(),
        comments: options.comments,
        events_left: options.max_events,
        line: String::new(),
    };
    let result = match &options.source {
        Source::Stdin => {
            let mut parser = Parser::new().last_event_id(options.last_event_id.clone());
            if let Some(limit) = options.max_event_size {
                parser = parser.max_event_size(limit);
            }
            tail(io::stdin().lock(), parser, &mut printer)
        }
        Source::Url(url) => follow(url, &options, &mut printer),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`tail - | head`): done.
        Err(Failure::Io(e)) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Io(e)) => {
            eprintln!("tail: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Client(e)) => {
            eprintln!("tail: {e}");
            ExitCode::from(1)
        }
    }
}

/// `Ok(None)` asks for the usage text (`-h`, `--help`).
fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        source: Source::Stdin,
        last_event_id: String::new(),
        comments: false,
        max_events: None,
        max_event_size: None,
        headers: Vec::new(),
        method: None,
        data: None,
    };
    let mut source = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        // `--name=value` or `--name value`.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || match inline.clone().or_else(|| args.next().cloned()) {
            Some(value) => Ok(value),
            None => Err(format!("{name} needs a value")),
        };
        match name {
            "-h" | "--help" => return Ok(None),
            "--last-event-id" => options.last_event_id = value()?,
            "--comments" if inline.is_none() => options.comments = true,
            "--max-events" => {
                let n = value()?;
                match n.parse::<u64>() {
                    Ok(n) if n > 0 => options.max_events = Some(n),
                    _ => return Err(format!("--max-events needs a positive number, not `{n}`")),
                }
            }
            "--max-event-size" => {
                let n = value()?;
                match n.parse::<usize>() {
                    Ok(n) => options.max_event_size = Some(n),
                    _ => return Err(format!("--max-event-size needs a number, not `{n}`")),
                }
            }
            "--header" => {
                let header = value()?;
                let Some((name, value)) = header.split_once(':') else {
                    return Err(format!("--header needs `Name: value`, not `{header}`"));
                };
                let value = value.trim_start_matches([' ', '\t']);
                options.headers.push((name.trim().to_owned(), value.to_owned()));
            }
            "--method" => options.method = Some(value()?),
            "--data" => options.data = Some(value()?),
            "-" if source.is_none() => source = Some(Source::Stdin),
            url if source.is_none() && !url.starts_with('-') => {
                source = Some(Source::Url(url.to_owned()));
            }
            _ => return Err(format!("unexpected argument `{arg}`")),
        }
    }
    options.source = source.ok_or("no stream given (a URL, or `-` for standard input)")?;
    if matches!(options.source, Source::Stdin) {
        let url_only = [
            (!options.headers.is_empty(), "--header"),
            (options.method.is_some(), "--method"),
            (options.data.is_some(), "--data"),
        ];
        if let Some((_, name)) = url_only.iter().find(|(given, _)| *given) {
            return Err(format!("{name} needs a URL, not `-`"));
        }
    }
    Ok(Some(options))
}

/// Feeds the stream to the parser as it arrives and prints the events.
fn tail(mut input: impl Read, mut parser: Parser, printer: &mut Printer) -> Result<(), Failure> {
    let mut chunk = vec![0; 8192];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        parser.feed(&chunk[..n]);
        if print_items(&mut parser, printer)? {
            return Ok(());
        }
    }
    parser.finish();
    print_items(&mut parser, printer)?;
    Ok(())
}

/// Prints the parsed items; true once `--max-events` is reached.
fn print_items(parser: &mut Parser, printer: &mut Printer) -> io::Result<bool> {
    while let Some(item) = parser.next_item() {
        match item {
            Ok(Item::Event(event)) => {
                if printer.event(&event)? {
                    return Ok(true);
                }
            }
            Ok(Item::Comment(text)) => printer.comment(&text)?,
            Err(e) => eprintln!("tail: skipped an event: {e}"),
        }
    }
    Ok(false)
}

/// Follows `url` with the client until the stream ends for good.
fn follow(url: &str, options: &Options, printer: &mut Printer) -> Result<(), Failure> {
    let mut builder = Client::builder(url)
        .last_event_id(&options.last_event_id)
        .comments(options.comments)
        .states(true);
    if let Some(limit) = options.max_event_size {
        builder = builder.max_event_size(limit);
    }
    for (name, value) in &options.headers {
        builder = builder.header(name, value);
    }
    if let Some(data) = &options.data {
        builder = builder.method("POST").body(data.as_bytes());
    }
    if let Some(method) = &options.method {
        builder = builder.method(method);
    }
    let client = builder.build().map_err(Failure::Client)?;
    let mut reason = None;
    for item in client {
        match item {
            Ok(Received::Event(event)) => {
                if printer.event(&event)? {
                    return Ok(());
                }
            }
            Ok(Received::Comment(text)) => printer.comment(&text)?,
            Ok(Received::Connected(to)) => {
                eprintln!("tail: connected: {} {}", to.status(), to.url())
            }
            Ok(Received::Disconnected(why)) => reason = Some(why),
            Ok(Received::Retrying(delay)) => {
                let why = reason.take().unwrap_or(Disconnect::Ended);
                eprintln!("tail: {why}; reconnecting in {} ms", delay.as_millis());
            }
            Ok(_) => {}
            Err(e) if e.is_final() => return Err(Failure::Client(e)),
            Err(e) => eprintln!("tail: {e}"),
        }
    }
    // 204 No Content: the server asked us to stop.
    if let Some(why) = reason {
        eprintln!("tail: {why}");
    }
    Ok(())
}

/// Writes the JSON lines.
struct Printer {
    out: io::StdoutLock<'static>,
    comments: bool,
    events_left: Option<u64>,
    line: String,
}

impl Printer {
    /// Prints an event; true once `--max-events` is reached.
    fn event(&mut self, event: &MessageEvent) -> io::Result<bool> {
        self.line.clear();
        push_event(&mut self.line, event);
        self.write_line()?;
        if let Some(left) = &mut self.events_left {
            *left -= 1;
            return Ok(*left == 0);
        }
        Ok(false)
    }

    /// Prints a comment if comments were asked for.
    fn comment(&mut self, text: &str) -> io::Result<()> {
        if !self.comments {
            return Ok(());
        }
        self.line.clear();
        self.line.push_str("{\"comment\":");
        push_json_string(&mut self.line, text);
        self.line.push_str("}\n");
        self.write_line()
    }

    fn write_line(&mut self) -> io::Result<()> {
        self.out.write_all(self.line.as_bytes())?;
        self.out.flush()
    }
}

/// `{"type":…,"data":…,"id":…}` and a line feed.
fn push_event(out: &mut String, event: &MessageEvent) {
    out.push_str("{\"type\":");
    push_json_string(out, &event.event_type);
    out.push_str(",\"data\":");
    push_json_string(out, &event.data);
    out.push_str(",\"id\":");
    push_json_string(out, &event.id);
    out.push_str("}\n");
}

/// A JSON string literal: quotes, backslashes and control characters
/// escaped, everything else (non-ASCII too) as it is.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\u{1F}' | '\u{7F}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}
