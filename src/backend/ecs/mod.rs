//! Sessions beyond one machine: AWS ECS Fargate (and Fargate Spot) tasks run sessions, S3
//! keeps their directories (`megatest run --sync s3://…`, `megatest resume s3://…`,
//! `megatest ecs collect`), CloudWatch Logs their output. The only module that knows AWS SDK
//! types: the rest of megatest sees [`Aws`], [`sync::Syncer`] and plain data.
//!
//! Credentials, region and endpoint come from the usual AWS sources (environment, profile, the
//! task role inside ECS); `AWS_ENDPOINT_URL` (or `--endpoint-url`) points every client at an
//! AWS-compatible server such as moto. TLS is rustls with ring, like the rest of megatest.

pub mod costs;
pub mod matrix;
pub mod sync;
pub mod tasks;

use aws_credential_types::provider::ProvideCredentials;

/// Where to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Region (None: from the environment or profile).
    pub region: Option<String>,
    /// Endpoint URL of an AWS-compatible server (None: AWS itself, or `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
}

/// What went wrong talking to AWS, worded as what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No credentials anywhere the SDK looks.
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where a role provides them ({0})")]
    NoCredentials(String),
    /// No region configured.
    #[error("no AWS region: set AWS_REGION (or --region)")]
    NoRegion,
    /// The bucket is not there (or not visible with these credentials).
    #[error("the S3 bucket {0:?} does not exist or is not visible to these credentials: create it (deploy/cloudformation/megatest.yaml makes one: its BucketName output) or fix the s3:// URL")]
    NoSuchBucket(String),
    /// Not an `s3://bucket/prefix` URL.
    #[error("{0:?} is not an S3 location like s3://bucket/prefix")]
    BadUrl(String),
    /// An API call failed.
    #[error("{operation} failed: {message}")]
    Api {
        /// The AWS operation, e.g. `ecs:RunTask`.
        operation: &'static str,
        /// The service's message (or the transport's).
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl AwsError {
    /// An API error from an SDK error, with its code and message.
    pub(crate) fn api<E>(operation: &'static str, err: &aws_sdk_s3::error::SdkError<E>) -> AwsError
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
    {
        let message = match err.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("error"),
                service.message().unwrap_or("no message")
            ),
            None => aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
        };
        AwsError::Api { operation, message }
    }

    /// The service's error code of an SDK error, if it got that far.
    pub(crate) fn code<E>(err: &aws_sdk_s3::error::SdkError<E>) -> Option<String>
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata,
    {
        err.as_service_error()
            .and_then(|e| e.code())
            .map(str::to_string)
    }
}

/// Run `future` to its end on a runtime of its own, for the command line's one-shot AWS calls
/// (the clients then live and die with that runtime). Errors: the future's, or no runtime.
pub fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, AwsError>>,
) -> Result<T, AwsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AwsError::Io(format!("cannot start a runtime: {e}")))?
        .block_on(future)
}

/// Clients for ECS, S3 and CloudWatch Logs sharing one configuration.
#[derive(Clone, Debug)]
pub struct Aws {
    pub(crate) ecs: aws_sdk_ecs::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) logs: aws_sdk_cloudwatchlogs::Client,
    /// The region the clients use.
    pub region: String,
}

impl Aws {
    /// Load the configuration and check that credentials and a region are there.
    ///
    /// Errors: [`AwsError::NoCredentials`], [`AwsError::NoRegion`].
    pub async fn connect(settings: &AwsSettings) -> Result<Aws, AwsError> {
        use aws_smithy_http_client::tls;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or(AwsError::NoRegion)?;
        let Some(credentials) = config.credentials_provider() else {
            return Err(AwsError::NoCredentials("no credentials provider".into()));
        };
        credentials
            .provide_credentials()
            .await
            .map_err(|err| AwsError::NoCredentials(err.to_string()))?;
        // A custom endpoint (moto, MinIO, LocalStack) serves buckets by path, not by host name.
        let custom_endpoint = settings.endpoint_url.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(custom_endpoint)
            .build();
        Ok(Aws {
            ecs: aws_sdk_ecs::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            logs: aws_sdk_cloudwatchlogs::Client::new(&config),
            region,
        })
    }
}
