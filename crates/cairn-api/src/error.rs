//! etcd's server errors: the exact message text and gRPC code of each.
//!
//! Clients (clientv3, etcdctl, kube-apiserver) recognise errors by comparing the status message
//! byte for byte, so this is the only place these strings may be written.

/// One of etcd's v3 RPC errors. `Display` and [`EtcdError::message`] give etcd's exact text,
/// [`EtcdError::code`] its gRPC status code; convert with `tonic::Status::from(err)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn with more than `--max-txn-ops` operations.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn that writes one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A revision below the compact revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A revision above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// The backend quota is exhausted (NOSPACE alarm).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The lease does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with an ID already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    /// A lease TTL above the maximum (9e9 s).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// The watch was canceled.
    #[error("etcdserver: watch canceled")]
    WatchCanceled,
    /// A member with this ID already exists.
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    /// Another member uses these peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    /// The change would leave too few started members for quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    /// Peer URLs that do not parse.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// The member does not exist.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// Promote of a voting member.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// Promote of a learner that lags the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Adding a learner beyond the limit.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// A request above `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Too many proposals in flight (applied index lags committed).
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// Auth enable without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Auth enable while root lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// The user already exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// An empty user name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// The user does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// The role already exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// The role does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// An empty role name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The user lacks the permission.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Revoke of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoke of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A missing, expired or unknown token.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A forbidden auth change (e.g. revoking root's root role).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The request was checked against an auth store that has since changed.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// The member has no leader.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// A leader-only operation on a follower.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// Leadership changed while the request waited.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The cluster version does not support the request.
    #[error("etcdserver: not capable")]
    NotCapable,
    /// The server is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The request was not applied in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Timed out, probably because the previous leader failed.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    /// Timed out, probably because the connection to the leader was lost.
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,
    /// Timed out waiting for apply to catch up with a read index.
    #[error("etcdserver: request timed out, waiting for the applied index took too long")]
    TimeoutWaitAppliedIndex,
    /// The change would make the cluster unhealthy.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// A CORRUPT alarm is active.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// The RPC cannot be served by a learner.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// MoveLeader to a member that cannot become leader.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// Downgrade without a known cluster version.
    #[error("etcdserver: cluster version not found during downgrade")]
    ClusterVersionUnavailable,
    /// A downgrade target that is not a version.
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    /// A downgrade target that is not one minor version below.
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTargetVersion,
    /// A downgrade is already in progress.
    #[error("etcdserver: cluster has a downgrade job in progress")]
    DowngradeInProcess,
    /// Downgrade cancel without a downgrade in progress.
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    /// The request was canceled.
    #[error("etcdserver: request canceled")]
    Canceled,
    /// The request's deadline passed.
    #[error("etcdserver: context deadline exceeded")]
    DeadlineExceeded,
    /// MoveLeader did not see the transferee become leader in time. Not in rpctypes: etcd
    /// answers it with gRPC code Unknown.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TimeoutLeaderTransfer,
}

impl EtcdError {
    /// Every variant, in a stable order.
    pub const ALL: &'static [EtcdError] = &[
        EtcdError::EmptyKey,
        EtcdError::KeyNotFound,
        EtcdError::ValueProvided,
        EtcdError::LeaseProvided,
        EtcdError::TooManyOps,
        EtcdError::DuplicateKey,
        EtcdError::Compacted,
        EtcdError::FutureRev,
        EtcdError::NoSpace,
        EtcdError::LeaseNotFound,
        EtcdError::LeaseExist,
        EtcdError::LeaseTtlTooLarge,
        EtcdError::WatchCanceled,
        EtcdError::MemberExist,
        EtcdError::PeerUrlExist,
        EtcdError::MemberNotEnoughStarted,
        EtcdError::MemberBadUrls,
        EtcdError::MemberNotFound,
        EtcdError::MemberNotLearner,
        EtcdError::LearnerNotReady,
        EtcdError::TooManyLearners,
        EtcdError::RequestTooLarge,
        EtcdError::TooManyRequests,
        EtcdError::RootUserNotExist,
        EtcdError::RootRoleNotExist,
        EtcdError::UserAlreadyExist,
        EtcdError::UserEmpty,
        EtcdError::UserNotFound,
        EtcdError::RoleAlreadyExist,
        EtcdError::RoleNotFound,
        EtcdError::RoleEmpty,
        EtcdError::AuthFailed,
        EtcdError::PermissionDenied,
        EtcdError::RoleNotGranted,
        EtcdError::PermissionNotGranted,
        EtcdError::AuthNotEnabled,
        EtcdError::InvalidAuthToken,
        EtcdError::InvalidAuthMgmt,
        EtcdError::AuthOldRevision,
        EtcdError::NoLeader,
        EtcdError::NotLeader,
        EtcdError::LeaderChanged,
        EtcdError::NotCapable,
        EtcdError::Stopped,
        EtcdError::Timeout,
        EtcdError::TimeoutDueToLeaderFail,
        EtcdError::TimeoutDueToConnectionLost,
        EtcdError::TimeoutWaitAppliedIndex,
        EtcdError::Unhealthy,
        EtcdError::Corrupt,
        EtcdError::NotSupportedForLearner,
        EtcdError::BadLeaderTransferee,
        EtcdError::ClusterVersionUnavailable,
        EtcdError::WrongDowngradeVersionFormat,
        EtcdError::InvalidDowngradeTargetVersion,
        EtcdError::DowngradeInProcess,
        EtcdError::NoInflightDowngrade,
        EtcdError::Canceled,
        EtcdError::DeadlineExceeded,
        EtcdError::TimeoutLeaderTransfer,
    ];

    /// etcd's exact message text, e.g. `"etcdserver: key is not provided"`.
    pub fn message(&self) -> &'static str {
        match self {
            EtcdError::EmptyKey => "etcdserver: key is not provided",
            EtcdError::KeyNotFound => "etcdserver: key not found",
            EtcdError::ValueProvided => "etcdserver: value is provided",
            EtcdError::LeaseProvided => "etcdserver: lease is provided",
            EtcdError::TooManyOps => "etcdserver: too many operations in txn request",
            EtcdError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            EtcdError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            EtcdError::FutureRev => "etcdserver: mvcc: required revision is a future revision",
            EtcdError::NoSpace => "etcdserver: mvcc: database space exceeded",
            EtcdError::LeaseNotFound => "etcdserver: requested lease not found",
            EtcdError::LeaseExist => "etcdserver: lease already exists",
            EtcdError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            EtcdError::WatchCanceled => "etcdserver: watch canceled",
            EtcdError::MemberExist => "etcdserver: member ID already exist",
            EtcdError::PeerUrlExist => "etcdserver: Peer URLs already exists",
            EtcdError::MemberNotEnoughStarted => {
                "etcdserver: re-configuration failed due to not enough started members"
            }
            EtcdError::MemberBadUrls => "etcdserver: given member URLs are invalid",
            EtcdError::MemberNotFound => "etcdserver: member not found",
            EtcdError::MemberNotLearner => "etcdserver: can only promote a learner member",
            EtcdError::LearnerNotReady => {
                "etcdserver: can only promote a learner member which is in sync with leader"
            }
            EtcdError::TooManyLearners => "etcdserver: too many learner members in cluster",
            EtcdError::RequestTooLarge => "etcdserver: request is too large",
            EtcdError::TooManyRequests => "etcdserver: too many requests",
            EtcdError::RootUserNotExist => "etcdserver: root user does not exist",
            EtcdError::RootRoleNotExist => "etcdserver: root user does not have root role",
            EtcdError::UserAlreadyExist => "etcdserver: user name already exists",
            EtcdError::UserEmpty => "etcdserver: user name is empty",
            EtcdError::UserNotFound => "etcdserver: user name not found",
            EtcdError::RoleAlreadyExist => "etcdserver: role name already exists",
            EtcdError::RoleNotFound => "etcdserver: role name not found",
            EtcdError::RoleEmpty => "etcdserver: role name is empty",
            EtcdError::AuthFailed => {
                "etcdserver: authentication failed, invalid user ID or password"
            }
            EtcdError::PermissionDenied => "etcdserver: permission denied",
            EtcdError::RoleNotGranted => "etcdserver: role is not granted to the user",
            EtcdError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            EtcdError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            EtcdError::InvalidAuthToken => "etcdserver: invalid auth token",
            EtcdError::InvalidAuthMgmt => "etcdserver: invalid auth management",
            EtcdError::AuthOldRevision => "etcdserver: revision of auth store is old",
            EtcdError::NoLeader => "etcdserver: no leader",
            EtcdError::NotLeader => "etcdserver: not leader",
            EtcdError::LeaderChanged => "etcdserver: leader changed",
            EtcdError::NotCapable => "etcdserver: not capable",
            EtcdError::Stopped => "etcdserver: server stopped",
            EtcdError::Timeout => "etcdserver: request timed out",
            EtcdError::TimeoutDueToLeaderFail => {
                "etcdserver: request timed out, possibly due to previous leader failure"
            }
            EtcdError::TimeoutDueToConnectionLost => {
                "etcdserver: request timed out, possibly due to connection lost"
            }
            EtcdError::TimeoutWaitAppliedIndex => {
                "etcdserver: request timed out, waiting for the applied index took too long"
            }
            EtcdError::Unhealthy => "etcdserver: unhealthy cluster",
            EtcdError::Corrupt => "etcdserver: corrupt cluster",
            EtcdError::NotSupportedForLearner => "etcdserver: rpc not supported for learner",
            EtcdError::BadLeaderTransferee => "etcdserver: bad leader transferee",
            EtcdError::ClusterVersionUnavailable => {
                "etcdserver: cluster version not found during downgrade"
            }
            EtcdError::WrongDowngradeVersionFormat => {
                "etcdserver: wrong downgrade target version format"
            }
            EtcdError::InvalidDowngradeTargetVersion => {
                "etcdserver: invalid downgrade target version"
            }
            EtcdError::DowngradeInProcess => "etcdserver: cluster has a downgrade job in progress",
            EtcdError::NoInflightDowngrade => "etcdserver: no inflight downgrade job",
            EtcdError::Canceled => "etcdserver: request canceled",
            EtcdError::DeadlineExceeded => "etcdserver: context deadline exceeded",
            EtcdError::TimeoutLeaderTransfer => {
                "etcdserver: request timed out, leader transfer took too long"
            }
        }
    }

    /// The gRPC status code etcd sends with this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            EtcdError::EmptyKey => Code::InvalidArgument,
            EtcdError::KeyNotFound => Code::InvalidArgument,
            EtcdError::ValueProvided => Code::InvalidArgument,
            EtcdError::LeaseProvided => Code::InvalidArgument,
            EtcdError::TooManyOps => Code::InvalidArgument,
            EtcdError::DuplicateKey => Code::InvalidArgument,
            EtcdError::Compacted => Code::OutOfRange,
            EtcdError::FutureRev => Code::OutOfRange,
            EtcdError::NoSpace => Code::ResourceExhausted,
            EtcdError::LeaseNotFound => Code::NotFound,
            EtcdError::LeaseExist => Code::FailedPrecondition,
            EtcdError::LeaseTtlTooLarge => Code::OutOfRange,
            EtcdError::WatchCanceled => Code::Cancelled,
            EtcdError::MemberExist => Code::FailedPrecondition,
            EtcdError::PeerUrlExist => Code::FailedPrecondition,
            EtcdError::MemberNotEnoughStarted => Code::FailedPrecondition,
            EtcdError::MemberBadUrls => Code::InvalidArgument,
            EtcdError::MemberNotFound => Code::NotFound,
            EtcdError::MemberNotLearner => Code::FailedPrecondition,
            EtcdError::LearnerNotReady => Code::FailedPrecondition,
            EtcdError::TooManyLearners => Code::FailedPrecondition,
            EtcdError::RequestTooLarge => Code::InvalidArgument,
            EtcdError::TooManyRequests => Code::ResourceExhausted,
            EtcdError::RootUserNotExist => Code::FailedPrecondition,
            EtcdError::RootRoleNotExist => Code::FailedPrecondition,
            EtcdError::UserAlreadyExist => Code::FailedPrecondition,
            EtcdError::UserEmpty => Code::InvalidArgument,
            EtcdError::UserNotFound => Code::FailedPrecondition,
            EtcdError::RoleAlreadyExist => Code::FailedPrecondition,
            EtcdError::RoleNotFound => Code::FailedPrecondition,
            EtcdError::RoleEmpty => Code::InvalidArgument,
            EtcdError::AuthFailed => Code::InvalidArgument,
            EtcdError::PermissionDenied => Code::PermissionDenied,
            EtcdError::RoleNotGranted => Code::FailedPrecondition,
            EtcdError::PermissionNotGranted => Code::FailedPrecondition,
            EtcdError::AuthNotEnabled => Code::FailedPrecondition,
            EtcdError::InvalidAuthToken => Code::Unauthenticated,
            EtcdError::InvalidAuthMgmt => Code::InvalidArgument,
            EtcdError::AuthOldRevision => Code::InvalidArgument,
            EtcdError::NoLeader => Code::Unavailable,
            EtcdError::NotLeader => Code::FailedPrecondition,
            EtcdError::LeaderChanged => Code::Unavailable,
            EtcdError::NotCapable => Code::Unavailable,
            EtcdError::Stopped => Code::Unavailable,
            EtcdError::Timeout => Code::Unavailable,
            EtcdError::TimeoutDueToLeaderFail => Code::Unavailable,
            EtcdError::TimeoutDueToConnectionLost => Code::Unavailable,
            EtcdError::TimeoutWaitAppliedIndex => Code::Unavailable,
            EtcdError::Unhealthy => Code::Unavailable,
            EtcdError::Corrupt => Code::DataLoss,
            EtcdError::NotSupportedForLearner => Code::Unavailable,
            EtcdError::BadLeaderTransferee => Code::FailedPrecondition,
            EtcdError::ClusterVersionUnavailable => Code::Unavailable,
            EtcdError::WrongDowngradeVersionFormat => Code::InvalidArgument,
            EtcdError::InvalidDowngradeTargetVersion => Code::InvalidArgument,
            EtcdError::DowngradeInProcess => Code::FailedPrecondition,
            EtcdError::NoInflightDowngrade => Code::FailedPrecondition,
            EtcdError::Canceled => Code::Cancelled,
            EtcdError::DeadlineExceeded => Code::DeadlineExceeded,
            EtcdError::TimeoutLeaderTransfer => Code::Unknown,
        }
    }

    /// The error whose message is exactly `message` (as a client sees it), if any.
    pub fn from_message(message: &str) -> Option<EtcdError> {
        Self::ALL.iter().copied().find(|e| e.message() == message)
    }

    /// The error carried by a gRPC status, if it is one of etcd's (message and code match).
    pub fn from_status(status: &tonic::Status) -> Option<EtcdError> {
        Self::from_message(status.message()).filter(|e| e.code() == status.code())
    }
}

impl From<EtcdError> for tonic::Status {
    fn from(err: EtcdError) -> Self {
        tonic::Status::new(err.code(), err.message())
    }
}
