//! PostgreSQL values to and from JSON, in the binary wire format (what sqlx exchanges).
//!
//! Rows: `bool`, integers and floats are numbers (`NaN` and infinities strings); `numeric` is
//! a number when an `f64` holds it exactly, else its text; text types, enums and `xml` are
//! strings; `json`/`jsonb` are the JSON itself; `bytea` is base64; `uuid` the usual hyphenated
//! text; `timestamp`, `timestamptz` and `date` RFC 3339 strings in UTC (a date at midnight, as
//! Dapr's Go time values marshal); `time` `15:04:05`; arrays JSON arrays; `NULL` `null`;
//! anything else its text when it is UTF-8, else base64.
//!
//! Parameters are encoded for the type the server inferred for each placeholder: numbers and
//! numeric strings for numeric types, booleans, any JSON for `json`/`jsonb` (a string holding
//! JSON is sent as that JSON), strings for text types and `bytea`, RFC 3339 strings for
//! `timestamp`/`timestamptz`/`date`, one-dimensional JSON arrays for arrays of those. Other
//! types are refused with a hint to cast the placeholder (`$1::text::inet`).

mod params;
mod rows;

pub(super) use self::params::Param;
pub(super) use self::rows::decode;

const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const CHAR: u32 = 18;
const NAME: u32 = 19;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const OID: u32 = 26;
const JSON: u32 = 114;
const XML: u32 = 142;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const UNKNOWN: u32 = 705;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;
const DATE: u32 = 1082;
const TIME: u32 = 1083;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;
const UUID: u32 = 2950;
const JSONB: u32 = 3802;
/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i64 = 10_957;
