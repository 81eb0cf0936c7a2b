//! The trait impl of `dapr.proto.runtime.v1.Dapr`: every RPC either delegates to a block
//! module or answers `Unimplemented`, so SDKs that fall back on `UNIMPLEMENTED` keep working.

use std::sync::Arc;

use mecha_proto::{common, runtime as rt};
use tonic::{Request, Response, Status, Streaming};

use super::{
    Unsupported, bindings, configuration, invoke, lock, metadata, pubsub, secrets, state,
    unsupported,
};
use crate::sidecar::Services;

/// The gRPC `Dapr` service over the building-block services.
pub struct DaprApi {
    pub(super) services: Arc<Services>,
}

#[tonic::async_trait]
impl rt::dapr_server::Dapr for DaprApi {
    async fn invoke_service(
        &self,
        request: Request<rt::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        invoke::invoke_service(&self.services, request).await
    }

    async fn get_state(
        &self,
        request: Request<rt::GetStateRequest>,
    ) -> Result<Response<rt::GetStateResponse>, Status> {
        state::get_state(&self.services, request).await
    }

    async fn get_bulk_state(
        &self,
        request: Request<rt::GetBulkStateRequest>,
    ) -> Result<Response<rt::GetBulkStateResponse>, Status> {
        state::get_bulk_state(&self.services, request).await
    }

    async fn save_state(
        &self,
        request: Request<rt::SaveStateRequest>,
    ) -> Result<Response<()>, Status> {
        state::save_state(&self.services, request).await
    }

    async fn query_state_alpha1(
        &self,
        request: Request<rt::QueryStateRequest>,
    ) -> Result<Response<rt::QueryStateResponse>, Status> {
        state::query_state(&self.services, request).await
    }

    async fn delete_state(
        &self,
        request: Request<rt::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        state::delete_state(&self.services, request).await
    }

    async fn delete_bulk_state(
        &self,
        request: Request<rt::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        state::delete_bulk_state(&self.services, request).await
    }

    async fn execute_state_transaction(
        &self,
        request: Request<rt::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        state::execute_state_transaction(&self.services, request).await
    }

    async fn publish_event(
        &self,
        request: Request<rt::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        pubsub::publish(&self.services, request).await
    }

    async fn bulk_publish_event_alpha1(
        &self,
        request: Request<rt::BulkPublishRequest>,
    ) -> Result<Response<rt::BulkPublishResponse>, Status> {
        pubsub::bulk_publish(&self.services, request).await
    }

    async fn bulk_publish_event(
        &self,
        request: Request<rt::BulkPublishRequest>,
    ) -> Result<Response<rt::BulkPublishResponse>, Status> {
        pubsub::bulk_publish(&self.services, request).await
    }

    type SubscribeTopicEventsAlpha1Stream = pubsub::EventStream;

    async fn subscribe_topic_events_alpha1(
        &self,
        request: Request<Streaming<rt::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        pubsub::subscribe_stream(&self.services, request).await
    }

    async fn invoke_binding(
        &self,
        request: Request<rt::InvokeBindingRequest>,
    ) -> Result<Response<rt::InvokeBindingResponse>, Status> {
        bindings::invoke(&self.services, request).await
    }

    async fn get_secret(
        &self,
        request: Request<rt::GetSecretRequest>,
    ) -> Result<Response<rt::GetSecretResponse>, Status> {
        secrets::get_secret(&self.services, request).await
    }

    async fn get_bulk_secret(
        &self,
        request: Request<rt::GetBulkSecretRequest>,
    ) -> Result<Response<rt::GetBulkSecretResponse>, Status> {
        secrets::get_bulk_secret(&self.services, request).await
    }

    async fn register_actor_timer(
        &self,
        _request: Request<rt::RegisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("RegisterActorTimer"))
    }

    async fn unregister_actor_timer(
        &self,
        _request: Request<rt::UnregisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("UnregisterActorTimer"))
    }

    async fn register_actor_reminder(
        &self,
        _request: Request<rt::RegisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("RegisterActorReminder"))
    }

    async fn unregister_actor_reminder(
        &self,
        _request: Request<rt::UnregisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("UnregisterActorReminder"))
    }

    async fn unregister_actor_reminders_by_type(
        &self,
        _request: Request<rt::UnregisterActorRemindersByTypeRequest>,
    ) -> Result<Response<rt::UnregisterActorRemindersByTypeResponse>, Status> {
        Err(unsupported("UnregisterActorRemindersByType"))
    }

    async fn list_actor_reminders(
        &self,
        _request: Request<rt::ListActorRemindersRequest>,
    ) -> Result<Response<rt::ListActorRemindersResponse>, Status> {
        Err(unsupported("ListActorReminders"))
    }

    async fn get_actor_state(
        &self,
        _request: Request<rt::GetActorStateRequest>,
    ) -> Result<Response<rt::GetActorStateResponse>, Status> {
        Err(unsupported("GetActorState"))
    }

    async fn get_actor_reminder(
        &self,
        _request: Request<rt::GetActorReminderRequest>,
    ) -> Result<Response<rt::GetActorReminderResponse>, Status> {
        Err(unsupported("GetActorReminder"))
    }

    async fn execute_actor_state_transaction(
        &self,
        _request: Request<rt::ExecuteActorStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("ExecuteActorStateTransaction"))
    }

    async fn invoke_actor(
        &self,
        _request: Request<rt::InvokeActorRequest>,
    ) -> Result<Response<rt::InvokeActorResponse>, Status> {
        Err(unsupported("InvokeActor"))
    }

    async fn get_configuration_alpha1(
        &self,
        request: Request<rt::GetConfigurationRequest>,
    ) -> Result<Response<rt::GetConfigurationResponse>, Status> {
        configuration::get(&self.services, request).await
    }

    async fn get_configuration(
        &self,
        request: Request<rt::GetConfigurationRequest>,
    ) -> Result<Response<rt::GetConfigurationResponse>, Status> {
        configuration::get(&self.services, request).await
    }

    type SubscribeConfigurationAlpha1Stream = configuration::UpdateStream;

    async fn subscribe_configuration_alpha1(
        &self,
        request: Request<rt::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationAlpha1Stream>, Status> {
        configuration::subscribe(&self.services, request).await
    }

    type SubscribeConfigurationStream = configuration::UpdateStream;

    async fn subscribe_configuration(
        &self,
        request: Request<rt::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        configuration::subscribe(&self.services, request).await
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        request: Request<rt::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<rt::UnsubscribeConfigurationResponse>, Status> {
        configuration::unsubscribe(&self.services, request).await
    }

    async fn unsubscribe_configuration(
        &self,
        request: Request<rt::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<rt::UnsubscribeConfigurationResponse>, Status> {
        configuration::unsubscribe(&self.services, request).await
    }

    async fn try_lock_alpha1(
        &self,
        request: Request<rt::TryLockRequest>,
    ) -> Result<Response<rt::TryLockResponse>, Status> {
        lock::try_lock(&self.services, request).await
    }

    async fn unlock_alpha1(
        &self,
        request: Request<rt::UnlockRequest>,
    ) -> Result<Response<rt::UnlockResponse>, Status> {
        lock::unlock(&self.services, request).await
    }

    type EncryptAlpha1Stream = Unsupported<rt::EncryptResponse>;

    async fn encrypt_alpha1(
        &self,
        _request: Request<Streaming<rt::EncryptRequest>>,
    ) -> Result<Response<Self::EncryptAlpha1Stream>, Status> {
        Err(unsupported("EncryptAlpha1"))
    }

    type DecryptAlpha1Stream = Unsupported<rt::DecryptResponse>;

    async fn decrypt_alpha1(
        &self,
        _request: Request<Streaming<rt::DecryptRequest>>,
    ) -> Result<Response<Self::DecryptAlpha1Stream>, Status> {
        Err(unsupported("DecryptAlpha1"))
    }

    async fn get_metadata(
        &self,
        request: Request<rt::GetMetadataRequest>,
    ) -> Result<Response<rt::GetMetadataResponse>, Status> {
        metadata::get_metadata(&self.services, request).await
    }

    async fn set_metadata(
        &self,
        request: Request<rt::SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        metadata::set_metadata(&self.services, request).await
    }

    async fn subtle_get_key_alpha1(
        &self,
        _request: Request<rt::SubtleGetKeyRequest>,
    ) -> Result<Response<rt::SubtleGetKeyResponse>, Status> {
        Err(unsupported("SubtleGetKeyAlpha1"))
    }

    async fn subtle_encrypt_alpha1(
        &self,
        _request: Request<rt::SubtleEncryptRequest>,
    ) -> Result<Response<rt::SubtleEncryptResponse>, Status> {
        Err(unsupported("SubtleEncryptAlpha1"))
    }

    async fn subtle_decrypt_alpha1(
        &self,
        _request: Request<rt::SubtleDecryptRequest>,
    ) -> Result<Response<rt::SubtleDecryptResponse>, Status> {
        Err(unsupported("SubtleDecryptAlpha1"))
    }

    async fn subtle_wrap_key_alpha1(
        &self,
        _request: Request<rt::SubtleWrapKeyRequest>,
    ) -> Result<Response<rt::SubtleWrapKeyResponse>, Status> {
        Err(unsupported("SubtleWrapKeyAlpha1"))
    }

    async fn subtle_unwrap_key_alpha1(
        &self,
        _request: Request<rt::SubtleUnwrapKeyRequest>,
    ) -> Result<Response<rt::SubtleUnwrapKeyResponse>, Status> {
        Err(unsupported("SubtleUnwrapKeyAlpha1"))
    }

    async fn subtle_sign_alpha1(
        &self,
        _request: Request<rt::SubtleSignRequest>,
    ) -> Result<Response<rt::SubtleSignResponse>, Status> {
        Err(unsupported("SubtleSignAlpha1"))
    }

    async fn subtle_verify_alpha1(
        &self,
        _request: Request<rt::SubtleVerifyRequest>,
    ) -> Result<Response<rt::SubtleVerifyResponse>, Status> {
        Err(unsupported("SubtleVerifyAlpha1"))
    }

    async fn start_workflow_alpha1(
        &self,
        _request: Request<rt::StartWorkflowRequest>,
    ) -> Result<Response<rt::StartWorkflowResponse>, Status> {
        Err(unsupported("StartWorkflowAlpha1"))
    }

    async fn get_workflow_alpha1(
        &self,
        _request: Request<rt::GetWorkflowRequest>,
    ) -> Result<Response<rt::GetWorkflowResponse>, Status> {
        Err(unsupported("GetWorkflowAlpha1"))
    }

    async fn purge_workflow_alpha1(
        &self,
        _request: Request<rt::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("PurgeWorkflowAlpha1"))
    }

    async fn terminate_workflow_alpha1(
        &self,
        _request: Request<rt::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("TerminateWorkflowAlpha1"))
    }

    async fn pause_workflow_alpha1(
        &self,
        _request: Request<rt::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("PauseWorkflowAlpha1"))
    }

    async fn resume_workflow_alpha1(
        &self,
        _request: Request<rt::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("ResumeWorkflowAlpha1"))
    }

    async fn raise_event_workflow_alpha1(
        &self,
        _request: Request<rt::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("RaiseEventWorkflowAlpha1"))
    }

    async fn start_workflow_beta1(
        &self,
        _request: Request<rt::StartWorkflowRequest>,
    ) -> Result<Response<rt::StartWorkflowResponse>, Status> {
        Err(unsupported("StartWorkflowBeta1"))
    }

    async fn get_workflow_beta1(
        &self,
        _request: Request<rt::GetWorkflowRequest>,
    ) -> Result<Response<rt::GetWorkflowResponse>, Status> {
        Err(unsupported("GetWorkflowBeta1"))
    }

    async fn purge_workflow_beta1(
        &self,
        _request: Request<rt::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("PurgeWorkflowBeta1"))
    }

    async fn terminate_workflow_beta1(
        &self,
        _request: Request<rt::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("TerminateWorkflowBeta1"))
    }

    async fn pause_workflow_beta1(
        &self,
        _request: Request<rt::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("PauseWorkflowBeta1"))
    }

    async fn resume_workflow_beta1(
        &self,
        _request: Request<rt::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("ResumeWorkflowBeta1"))
    }

    async fn raise_event_workflow_beta1(
        &self,
        _request: Request<rt::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("RaiseEventWorkflowBeta1"))
    }

    async fn shutdown(
        &self,
        request: Request<rt::ShutdownRequest>,
    ) -> Result<Response<()>, Status> {
        metadata::shutdown(&self.services, request).await
    }

    async fn schedule_job_alpha1(
        &self,
        _request: Request<rt::ScheduleJobRequest>,
    ) -> Result<Response<rt::ScheduleJobResponse>, Status> {
        Err(unsupported("ScheduleJobAlpha1"))
    }

    async fn schedule_job(
        &self,
        _request: Request<rt::ScheduleJobRequest>,
    ) -> Result<Response<rt::ScheduleJobResponse>, Status> {
        Err(unsupported("ScheduleJob"))
    }

    async fn get_job_alpha1(
        &self,
        _request: Request<rt::GetJobRequest>,
    ) -> Result<Response<rt::GetJobResponse>, Status> {
        Err(unsupported("GetJobAlpha1"))
    }

    async fn get_job(
        &self,
        _request: Request<rt::GetJobRequest>,
    ) -> Result<Response<rt::GetJobResponse>, Status> {
        Err(unsupported("GetJob"))
    }

    async fn delete_job_alpha1(
        &self,
        _request: Request<rt::DeleteJobRequest>,
    ) -> Result<Response<rt::DeleteJobResponse>, Status> {
        Err(unsupported("DeleteJobAlpha1"))
    }

    async fn delete_job(
        &self,
        _request: Request<rt::DeleteJobRequest>,
    ) -> Result<Response<rt::DeleteJobResponse>, Status> {
        Err(unsupported("DeleteJob"))
    }

    async fn delete_jobs_by_prefix_alpha1(
        &self,
        _request: Request<rt::DeleteJobsByPrefixRequestAlpha1>,
    ) -> Result<Response<rt::DeleteJobsByPrefixResponseAlpha1>, Status> {
        Err(unsupported("DeleteJobsByPrefixAlpha1"))
    }

    async fn delete_jobs_by_prefix(
        &self,
        _request: Request<rt::DeleteJobsByPrefixRequest>,
    ) -> Result<Response<rt::DeleteJobsByPrefixResponse>, Status> {
        Err(unsupported("DeleteJobsByPrefix"))
    }

    async fn list_jobs_alpha1(
        &self,
        _request: Request<rt::ListJobsRequestAlpha1>,
    ) -> Result<Response<rt::ListJobsResponseAlpha1>, Status> {
        Err(unsupported("ListJobsAlpha1"))
    }

    async fn list_jobs(
        &self,
        _request: Request<rt::ListJobsRequest>,
    ) -> Result<Response<rt::ListJobsResponse>, Status> {
        Err(unsupported("ListJobs"))
    }

    async fn converse_alpha1(
        &self,
        _request: Request<rt::ConversationRequest>,
    ) -> Result<Response<rt::ConversationResponse>, Status> {
        Err(unsupported("ConverseAlpha1"))
    }

    async fn converse_alpha2(
        &self,
        _request: Request<rt::ConversationRequestAlpha2>,
    ) -> Result<Response<rt::ConversationResponseAlpha2>, Status> {
        Err(unsupported("ConverseAlpha2"))
    }

    async fn create_index_alpha1(
        &self,
        _request: Request<rt::CreateIndexRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("CreateIndexAlpha1"))
    }

    async fn get_index_alpha1(
        &self,
        _request: Request<rt::GetIndexRequestAlpha1>,
    ) -> Result<Response<rt::GetIndexResponseAlpha1>, Status> {
        Err(unsupported("GetIndexAlpha1"))
    }

    async fn list_indexes_alpha1(
        &self,
        _request: Request<rt::ListIndexesRequestAlpha1>,
    ) -> Result<Response<rt::ListIndexesResponseAlpha1>, Status> {
        Err(unsupported("ListIndexesAlpha1"))
    }

    async fn delete_index_alpha1(
        &self,
        _request: Request<rt::DeleteIndexRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("DeleteIndexAlpha1"))
    }

    async fn index_documents_alpha1(
        &self,
        _request: Request<rt::IndexDocumentsRequestAlpha1>,
    ) -> Result<Response<rt::IndexDocumentsResponseAlpha1>, Status> {
        Err(unsupported("IndexDocumentsAlpha1"))
    }

    async fn get_documents_alpha1(
        &self,
        _request: Request<rt::GetDocumentsRequestAlpha1>,
    ) -> Result<Response<rt::GetDocumentsResponseAlpha1>, Status> {
        Err(unsupported("GetDocumentsAlpha1"))
    }

    async fn delete_documents_alpha1(
        &self,
        _request: Request<rt::DeleteDocumentsRequestAlpha1>,
    ) -> Result<Response<rt::DeleteDocumentsResponseAlpha1>, Status> {
        Err(unsupported("DeleteDocumentsAlpha1"))
    }

    async fn search_alpha1(
        &self,
        _request: Request<rt::SearchRequestAlpha1>,
    ) -> Result<Response<rt::SearchResponseAlpha1>, Status> {
        Err(unsupported("SearchAlpha1"))
    }

    async fn create_collection_alpha1(
        &self,
        _request: Request<rt::CreateCollectionRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("CreateCollectionAlpha1"))
    }

    async fn get_collection_alpha1(
        &self,
        _request: Request<rt::GetCollectionRequestAlpha1>,
    ) -> Result<Response<rt::GetCollectionResponseAlpha1>, Status> {
        Err(unsupported("GetCollectionAlpha1"))
    }

    async fn list_collections_alpha1(
        &self,
        _request: Request<rt::ListCollectionsRequestAlpha1>,
    ) -> Result<Response<rt::ListCollectionsResponseAlpha1>, Status> {
        Err(unsupported("ListCollectionsAlpha1"))
    }

    async fn delete_collection_alpha1(
        &self,
        _request: Request<rt::DeleteCollectionRequestAlpha1>,
    ) -> Result<Response<()>, Status> {
        Err(unsupported("DeleteCollectionAlpha1"))
    }

    async fn upsert_vectors_alpha1(
        &self,
        _request: Request<rt::UpsertVectorsRequestAlpha1>,
    ) -> Result<Response<rt::UpsertVectorsResponseAlpha1>, Status> {
        Err(unsupported("UpsertVectorsAlpha1"))
    }

    async fn delete_vectors_alpha1(
        &self,
        _request: Request<rt::DeleteVectorsRequestAlpha1>,
    ) -> Result<Response<rt::DeleteVectorsResponseAlpha1>, Status> {
        Err(unsupported("DeleteVectorsAlpha1"))
    }

    async fn get_vectors_alpha1(
        &self,
        _request: Request<rt::GetVectorsRequestAlpha1>,
    ) -> Result<Response<rt::GetVectorsResponseAlpha1>, Status> {
        Err(unsupported("GetVectorsAlpha1"))
    }

    async fn query_vectors_alpha1(
        &self,
        _request: Request<rt::QueryVectorsRequestAlpha1>,
    ) -> Result<Response<rt::QueryVectorsResponseAlpha1>, Status> {
        Err(unsupported("QueryVectorsAlpha1"))
    }

    async fn batch_query_vectors_alpha1(
        &self,
        _request: Request<rt::BatchQueryVectorsRequestAlpha1>,
    ) -> Result<Response<rt::BatchQueryVectorsResponseAlpha1>, Status> {
        Err(unsupported("BatchQueryVectorsAlpha1"))
    }
}
