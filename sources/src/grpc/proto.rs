//! Dewy's `dewy.RegistryService` (spec dewy.md 5), written by hand instead of generated: two
//! unary methods and four small messages do not justify a `protoc` (or a protobuf compiler
//! crate) in every build. Field numbers, types and the service path are the wire contract;
//! the Rust names follow the upstream .proto, including its misspelt `arifact_name`.
//!
//! The equivalent .proto:
//!
//! ```proto
//! syntax = "proto3";
//! package dewy;
//! import "google/protobuf/empty.proto";
//! import "google/protobuf/timestamp.proto";
//! service RegistryService {
//!   rpc Current(CurrentRequest) returns (CurrentResponse);
//!   rpc Report(ReportRequest) returns (google.protobuf.Empty);
//! }
//! message CurrentRequest { string arch = 1; string os = 2; optional string arifact_name = 3; }
//! message CurrentResponse {
//!   string id = 1; string tag = 2; string artifact_url = 3;
//!   optional google.protobuf.Timestamp created_at = 4;
//! }
//! message ReportRequest { string id = 1; string tag = 2; string command = 3; optional string err = 4; }
//! ```

use ::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// The gRPC path of `Current`.
pub const CURRENT_PATH: &str = "/dewy.RegistryService/Current";
/// The gRPC path of `Report`.
pub const REPORT_PATH: &str = "/dewy.RegistryService/Report";

/// What the client runs on and wants.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CurrentRequest {
    /// CPU architecture, Go's names (`amd64`, `arm64`).
    #[prost(string, tag = "1")]
    pub arch: String,
    /// OS, Go's names (`linux`, `darwin`).
    #[prost(string, tag = "2")]
    pub os: String,
    /// The `?artifact=` option; absent when unset.
    #[prost(string, optional, tag = "3")]
    pub arifact_name: Option<String>,
}

/// The release the server says should run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CurrentResponse {
    /// Identifies this answer; sent back in [`ReportRequest::id`].
    #[prost(string, tag = "1")]
    pub id: String,
    /// The version tag.
    #[prost(string, tag = "2")]
    pub tag: String,
    /// Where the bytes are: a `ghr://`, `s3://`, `gs://` or `img://` artifact URL.
    #[prost(string, tag = "3")]
    pub artifact_url: String,
    /// When the release was created.
    #[prost(message, optional, tag = "4")]
    pub created_at: Option<Timestamp>,
}

/// The outcome of a deploy.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportRequest {
    /// [`CurrentResponse::id`] of the deployed answer.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The deployed tag.
    #[prost(string, tag = "2")]
    pub tag: String,
    /// `server`, `assets` or `container`.
    #[prost(string, tag = "3")]
    pub command: String,
    /// The error; absent means success (the only case Dewy sends).
    #[prost(string, optional, tag = "4")]
    pub err: Option<String>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// A client of `dewy.RegistryService`. `google.protobuf.Empty` is prost's `()`.
#[derive(Clone)]
pub struct RegistryServiceClient {
    inner: tonic::client::Grpc<Channel>,
}

impl RegistryServiceClient {
    pub fn new(channel: Channel) -> Self {
        RegistryServiceClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// `Current`: the artifact that should run now.
    pub async fn current(
        &mut self,
        request: CurrentRequest,
    ) -> Result<tonic::Response<CurrentResponse>, tonic::Status> {
        self.unary(request, CURRENT_PATH).await
    }

    /// `Report`: the result of deploying it.
    pub async fn report(
        &mut self,
        request: ReportRequest,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        self.unary(request, REPORT_PATH).await
    }

    async fn unary<Req, Resp>(
        &mut self,
        request: Req,
        path: &'static str,
    ) -> Result<tonic::Response<Resp>, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        self.inner
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The bytes on the wire, written out by hand from the field numbers and types of spec 5,
    /// so a wrong tag cannot hide behind our own decoder agreeing with our own encoder.
    #[test]
    fn wire_bytes_follow_the_dewy_proto() {
        let req = CurrentRequest {
            arch: "amd64".into(),
            os: "linux".into(),
            arifact_name: Some(String::new()),
        };
        // 1: "amd64", 2: "linux", 3: "" (optional: present even when empty).
        let want: &[u8] = b"\x0a\x05amd64\x12\x05linux\x1a\x00";
        assert_eq!(req.encode_to_vec(), want);
        let unset = CurrentRequest {
            arifact_name: None,
            ..req
        };
        assert_eq!(unset.encode_to_vec(), &want[..want.len() - 2]);

        // 1: "i", 2: "t", 3: "u", 4: {1: 5, 2: 6}
        let resp = b"\x0a\x01i\x12\x01t\x1a\x01u\x22\x04\x08\x05\x10\x06";
        assert_eq!(
            CurrentResponse::decode(&resp[..]).unwrap(),
            CurrentResponse {
                id: "i".into(),
                tag: "t".into(),
                artifact_url: "u".into(),
                created_at: Some(Timestamp {
                    seconds: 5,
                    nanos: 6
                }),
            }
        );

        let report = ReportRequest {
            id: "i".into(),
            tag: "t".into(),
            command: "server".into(),
            err: None,
        };
        assert_eq!(report.encode_to_vec(), b"\x0a\x01i\x12\x01t\x1a\x06server");
        let failed = ReportRequest {
            err: Some("x".into()),
            ..report
        };
        assert!(failed.encode_to_vec().ends_with(b"\x22\x01x"));
    }
}
