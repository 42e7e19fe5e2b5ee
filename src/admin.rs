//! capcri's admin API (`proto/capcri/admin/v1alpha1/admin.proto`): explain
//! and dry-run capability decisions, list the policies in force. It is a
//! separate root-only socket so that a CRI client is not an admin client.

use crate::capabilities::policy::{Decision, render_json, render_pod_table, render_table};
use crate::container::capabilities::image_facts;
use crate::container::capabilities::image_file_caps;
use crate::node::Node;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::info_span;

#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("capcri.admin.v1alpha1");
}

use proto::admin_server::Admin;
use proto::{
    DecisionResponse, EvaluateRequest, ExplainRequest, ListPoliciesRequest, ListPoliciesResponse,
    Policy,
};

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        AdminService { node }
    }
}

fn decision_response(container_id: String, d: &Decision) -> Result<DecisionResponse, Status> {
    let decision_json =
        render_json(d).map_err(|e| Status::internal(format!("cannot encode decision: {e}")))?;
    Ok(DecisionResponse {
        container_id,
        decision_json,
        table: render_table(d),
    })
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn explain(
        &self,
        r: Request<ExplainRequest>,
    ) -> Result<Response<DecisionResponse>, Status> {
        let id = r.into_inner().container_id;
        let _span = info_span!("Explain", container.id = %id).entered();
        let record = match self.node.container(&id) {
            Ok(record) => record,
            // A pod id: its network decision (the sysctls the policies set).
            Err(e) => match self.node.find_pod(&id) {
                Some(pod) => {
                    let decision_json = serde_json::to_string_pretty(&pod.network_policy)
                        .map_err(|e| Status::internal(format!("cannot encode decision: {e}")))?;
                    return Ok(Response::new(DecisionResponse {
                        container_id: pod.id.clone(),
                        decision_json,
                        table: format!(
                            "pod sandbox {}\n{}",
                            pod.id,
                            render_pod_table(&pod.network_policy)
                        ),
                    }));
                }
                None => return Err(crate::cri::to_status(e)),
            },
        };
        let decision = record.decision.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "container {} was created before capcri recorded decisions; recreate it to get one",
                record.id
            ))
        })?;
        Ok(Response::new(decision_response(
            record.id.clone(),
            decision,
        )?))
    }

    async fn evaluate(
        &self,
        r: Request<EvaluateRequest>,
    ) -> Result<Response<DecisionResponse>, Status> {
        let req = r.into_inner();
        let _span = info_span!("Evaluate", image = %req.image).entered();
        let image = if req.image.is_empty() {
            None
        } else {
            let record = self.node.images().resolve(&req.image).ok_or_else(|| {
                Status::not_found(format!(
                    "image {} is not pulled on this node; pull it first",
                    req.image
                ))
            })?;
            let name = self
                .node
                .images()
                .reported_name(&record.id, &[req.image.as_str()]);
            Some(image_facts(&record, &name, image_file_caps(&record)))
        };
        let dir = self.node.policies().dir().to_path_buf();
        let json = crate::capabilities::policy::cli_eval(
            Some(&dir),
            &req.pod_config_json,
            &req.container_config_json,
            image,
            true,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let decision: Decision = serde_json::from_str(&json)
            .map_err(|e| Status::internal(format!("cannot decode the decision: {e}")))?;
        Ok(Response::new(decision_response(String::new(), &decision)?))
    }

    async fn list_policies(
        &self,
        _r: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        let store = self.node.policies();
        let set = store.current();
        let policies = set
            .policy_sources()
            .into_iter()
            .map(|(name, file)| Policy {
                name: name.to_string(),
                file: file.to_string(),
            })
            .collect();
        Ok(Response::new(ListPoliciesResponse {
            policy_dir: store.dir().display().to_string(),
            policies,
            last_reload_errors: store.last_errors(),
            reloads_ok: store.reloads_ok.load(std::sync::atomic::Ordering::Relaxed),
            reloads_failed: store
                .reloads_failed
                .load(std::sync::atomic::Ordering::Relaxed),
        }))
    }
}
