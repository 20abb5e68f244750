//! ECS task tags from the task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4` + `/task`).
//!
//! The task's fields become the tags the Datadog Agent's tagger gives an ECS task:
//!
//! | tag | from |
//! | --- | --- |
//! | `task_family`, `task_name` | `Family` (`task_name` is the family too, as in the Agent) |
//! | `task_version` | `Revision` |
//! | `ecs_cluster_name`, `cluster_name` | the name at the end of `Cluster` (`cluster_name` unless `disable_cluster_name_tag_key`) |
//! | `region`, `aws_account` | the region and 12-digit account of `TaskARN` (`arn:aws:ecs:<region>:<account>:task/…`) |
//! | `availability-zone`, `availability_zone` | `AvailabilityZone`, on Fargate only |
//! | `ecs_service` | `ServiceName` in lower case, when the task belongs to a service |
//! | `task_arn` | `TaskARN`, only with `DD_DOGSTATSD_TAG_CARDINALITY=orchestrator` or `high` |
//!
//! Empty fields give no tag. The answer is read up to 1 MiB with a 1 s deadline.

use std::time::Duration;

use serde::Deserialize;

use crate::config::TagCardinality;

/// Deadline of one task metadata request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of a task metadata answer read.
const READ_MAX: usize = 1024 * 1024;

/// The fields of a v4 task metadata answer offpath uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EcsTask {
    /// Cluster name or ARN.
    #[serde(rename = "Cluster")]
    pub cluster: String,
    /// The task's ARN.
    #[serde(rename = "TaskARN")]
    pub task_arn: String,
    /// Task definition family.
    #[serde(rename = "Family")]
    pub family: String,
    /// Task definition revision.
    #[serde(rename = "Revision")]
    pub revision: String,
    /// `EC2`, `FARGATE`, `EXTERNAL`, …
    #[serde(rename = "LaunchType")]
    pub launch_type: String,
    /// The availability zone (Fargate and recent ECS agents).
    #[serde(rename = "AvailabilityZone")]
    pub availability_zone: String,
    /// The service the task belongs to, when it does.
    #[serde(rename = "ServiceName")]
    pub service_name: String,
}

impl EcsTask {
    /// Parse a `/task` answer.
    ///
    /// # Errors
    /// When the answer is not a JSON object with at least a `TaskARN` or a `Family`.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let task: Self = serde_json::from_slice(body)
            .map_err(|e| format!("the task metadata answer is not a task: {e}"))?;
        if task.task_arn.is_empty() && task.family.is_empty() {
            return Err("the task metadata answer has neither TaskARN nor Family".to_owned());
        }
        Ok(task)
    }

    /// Whether the task runs on Fargate.
    pub fn is_fargate(&self) -> bool {
        self.launch_type.eq_ignore_ascii_case("FARGATE")
    }

    /// The task's tags (see the module table), sorted.
    pub fn tags(&self, cardinality: TagCardinality, cluster_name_tag: bool) -> Vec<String> {
        let mut tags = Vec::new();
        let mut add = |k: &str, v: &str| {
            if !v.is_empty() {
                tags.push(format!("{k}:{v}"));
            }
        };
        add("task_name", &self.family);
        add("task_family", &self.family);
        add("task_version", &self.revision);
        let (region, account) = region_and_account(&self.task_arn);
        add("aws_account", account);
        add("region", region);
        let cluster = cluster_name(&self.cluster);
        if cluster_name_tag {
            add("cluster_name", cluster);
        }
        add("ecs_cluster_name", cluster);
        if self.is_fargate() {
            add("availability_zone", &self.availability_zone);
            add("availability-zone", &self.availability_zone);
        }
        add("ecs_service", &self.service_name.to_lowercase());
        if cardinality != TagCardinality::Low {
            add("task_arn", &self.task_arn);
        }
        tags.sort_unstable();
        tags.dedup();
        tags
    }
}

/// The cluster name: what follows the `/` of `arn:…:cluster/<name>`, or the value as it is.
fn cluster_name(cluster: &str) -> &str {
    match cluster.split_once('/') {
        Some((_, name)) if !name.contains('/') => name,
        _ => cluster,
    }
}

/// The region (at least two `-`) and the 12-digit account of an ECS task ARN; empty when absent.
fn region_and_account(arn: &str) -> (&str, &str) {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() < 5 || parts[0] != "arn" || !parts[1].starts_with("aws") {
        return ("", "");
    }
    let region = if parts[3].matches('-').count() >= 2 {
        parts[3]
    } else {
        ""
    };
    let account = parts[4];
    let account = if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        account
    } else {
        ""
    };
    (region, account)
}

/// Fetch the task from the metadata endpoint `uri` (`ECS_CONTAINER_METADATA_URI_V4`).
///
/// # Errors
/// What failed, in words: unreachable, timed out, a status other than 200, or not a task.
pub async fn fetch_task(client: &reqwest::Client, uri: &str) -> Result<EcsTask, String> {
    let url = format!("{}/task", uri.trim_end_matches('/'));
    let (status, body) = super::send_capped(client.get(&url), READ_MAX + 1).await?;
    if status != 200 {
        return Err(format!("{url} answered {status}"));
    }
    if body.len() > READ_MAX {
        return Err(format!("{url} answered more than {READ_MAX} bytes"));
    }
    EcsTask::parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task metadata v4 example answer of the AWS documentation (Fargate), trimmed to the task.
    const FARGATE_TASK: &str = r#"{
        "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
        "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
        "Family": "curltest",
        "ServiceName": "MyService",
        "Revision": "3",
        "DesiredStatus": "RUNNING",
        "KnownStatus": "RUNNING",
        "Limits": {"CPU": 0.25, "Memory": 512},
        "AvailabilityZone": "us-west-2d",
        "LaunchType": "FARGATE",
        "Containers": [{"Name": "curl", "DockerId": "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603"}]
    }"#;

    #[test]
    fn a_fargate_task_gets_the_agents_task_tags() {
        let task = EcsTask::parse(FARGATE_TASK.as_bytes()).unwrap();
        assert!(task.is_fargate());
        assert_eq!(
            task.tags(TagCardinality::Low, true),
            [
                "availability-zone:us-west-2d",
                "availability_zone:us-west-2d",
                "aws_account:111122223333",
                "cluster_name:default",
                "ecs_cluster_name:default",
                "ecs_service:myservice",
                "region:us-west-2",
                "task_family:curltest",
                "task_name:curltest",
                "task_version:3",
            ]
        );
    }

    #[test]
    fn task_arn_only_at_orchestrator_cardinality_and_cluster_name_can_be_left_out() {
        let task = EcsTask::parse(FARGATE_TASK.as_bytes()).unwrap();
        let arn = "task_arn:arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3";
        for (card, has) in [
            (TagCardinality::Low, false),
            (TagCardinality::Orchestrator, true),
            (TagCardinality::High, true),
        ] {
            assert_eq!(task.tags(card, true).iter().any(|t| t == arn), has);
        }
        let tags = task.tags(TagCardinality::Low, false);
        assert!(!tags.iter().any(|t| t.starts_with("cluster_name:")));
        assert!(tags.contains(&"ecs_cluster_name:default".to_owned()));
    }

    #[test]
    fn an_ec2_task_has_no_availability_zone_tags_and_keeps_a_plain_cluster_name() {
        let body = r#"{"Cluster": "prod", "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc",
            "Family": "web", "Revision": "7", "LaunchType": "EC2", "AvailabilityZone": "eu-west-1a"}"#;
        let task = EcsTask::parse(body.as_bytes()).unwrap();
        assert!(!task.is_fargate());
        assert_eq!(
            task.tags(TagCardinality::Low, true),
            [
                "aws_account:123456789012",
                "cluster_name:prod",
                "ecs_cluster_name:prod",
                "region:eu-west-1",
                "task_family:web",
                "task_name:web",
                "task_version:7",
            ]
        );
    }

    #[test]
    fn arns_that_do_not_parse_give_no_region_or_account() {
        for (arn, region, account) in [
            (
                "arn:aws:ecs:us-east-1:123456789012:task/x",
                "us-east-1",
                "123456789012",
            ),
            (
                "arn:aws-cn:ecs:cn-north-1:123456789012:task/x",
                "cn-north-1",
                "123456789012",
            ),
            ("arn:aws:ecs:local:123456789012:task/x", "", "123456789012"),
            ("arn:aws:ecs:us-east-1:12345:task/x", "us-east-1", ""),
            ("not-an-arn", "", ""),
            ("", "", ""),
        ] {
            assert_eq!(region_and_account(arn), (region, account), "{arn}");
        }
        assert_eq!(cluster_name("arn:aws:ecs:r:1:cluster/c1"), "c1");
        assert_eq!(cluster_name("plain"), "plain");
    }

    #[test]
    fn garbage_answers_are_errors() {
        for body in ["", "<html>", "[]", "{}", "{\"Cluster\": 3}"] {
            assert!(EcsTask::parse(body.as_bytes()).is_err(), "{body}");
        }
    }
}
