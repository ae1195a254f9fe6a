"""Contains all the data models used in inputs/outputs"""

from .api_key_list import ApiKeyList
from .api_key_object import ApiKeyObject
from .artifact import Artifact
from .artifact_list import ArtifactList
from .auto_world_size import AutoWorldSize
from .base_expert_format import BaseExpertFormat
from .checkpoint_list import CheckpointList
from .complete_upload_request import CompleteUploadRequest
from .create_api_key_request import CreateApiKeyRequest
from .create_endpoint_request import CreateEndpointRequest
from .create_job_request import CreateJobRequest
from .create_job_request_metadata_type_0 import CreateJobRequestMetadataType0
from .create_routing_profile_request import CreateRoutingProfileRequest
from .create_upload_request import CreateUploadRequest
from .created_api_key import CreatedApiKey
from .device_request import DeviceRequest
from .error_body import ErrorBody
from .error_detail import ErrorDetail
from .estimate_inputs import EstimateInputs
from .estimate_memory import EstimateMemory
from .eval_prompt import EvalPrompt
from .event_list import EventList
from .expert_targets_type_2 import ExpertTargetsType2
from .expert_usage import ExpertUsage
from .expert_usage_list import ExpertUsageList
from .file_deleted import FileDeleted
from .file_list import FileList
from .file_object import FileObject
from .hyperparameters import Hyperparameters
from .hyperparameters_batch_size import HyperparametersBatchSize
from .hyperparameters_learning_rate_multiplier import (
    HyperparametersLearningRateMultiplier,
)
from .hyperparameters_n_epochs import HyperparametersNEpochs
from .job_checkpoint import JobCheckpoint
from .job_error import JobError
from .job_estimate import JobEstimate
from .job_event import JobEvent
from .job_event_data_type_0 import JobEventDataType0
from .job_list import JobList
from .job_memory import JobMemory
from .job_memory_stages import JobMemoryStages
from .job_object import JobObject
from .job_object_metadata import JobObjectMetadata
from .job_object_method import JobObjectMethod
from .job_object_result_type_0 import JobObjectResultType0
from .job_requirements import JobRequirements
from .job_status import JobStatus
from .layer_expert_usage import LayerExpertUsage
from .layer_profile import LayerProfile
from .line_error import LineError
from .lora_options import LoraOptions
from .lora_options_rank_pattern import LoraOptionsRankPattern
from .method import Method
from .model_list import ModelList
from .model_object import ModelObject
from .model_object_inspect_type_0 import ModelObjectInspectType0
from .moe_sft_qat_options import MoeSftQatOptions
from .monitor_options import MonitorOptions
from .mxfp_4_scale_rule import Mxfp4ScaleRule
from .order import Order
from .part_form import PartForm
from .precision import Precision
from .profile_targets import ProfileTargets
from .qat_format import QatFormat
from .qat_options import QatOptions
from .qat_trainable import QatTrainable
from .register_model_request import RegisterModelRequest
from .register_model_request_inspect import RegisterModelRequestInspect
from .resolved_hyperparameters import ResolvedHyperparameters
from .rotate_secret_request import RotateSecretRequest
from .router_mode import RouterMode
from .router_options import RouterOptions
from .routing_profile import RoutingProfile
from .routing_profile_object import RoutingProfileObject
from .runner_class_estimate import RunnerClassEstimate
from .runner_info import RunnerInfo
from .runner_info_labels import RunnerInfoLabels
from .runner_list import RunnerList
from .runner_object import RunnerObject
from .sft_method import SftMethod
from .stage_memory import StageMemory
from .streamed_event import StreamedEvent
from .supervised_method import SupervisedMethod
from .tenant_object import TenantObject
from .tenant_request import TenantRequest
from .throughput import Throughput
from .training_device import TrainingDevice
from .training_plan import TrainingPlan
from .update_endpoint_request import UpdateEndpointRequest
from .upload_form import UploadForm
from .upload_object import UploadObject
from .upload_part import UploadPart
from .webhook_attempt import WebhookAttempt
from .webhook_attempt_list import WebhookAttemptList
from .webhook_delivery import WebhookDelivery
from .webhook_endpoint import WebhookEndpoint
from .webhook_endpoint_list import WebhookEndpointList
from .webhook_event import WebhookEvent
from .webhook_event_data import WebhookEventData
from .webhook_event_list import WebhookEventList

__all__ = (
    "ApiKeyList",
    "ApiKeyObject",
    "Artifact",
    "ArtifactList",
    "AutoWorldSize",
    "BaseExpertFormat",
    "CheckpointList",
    "CompleteUploadRequest",
    "CreateApiKeyRequest",
    "CreateEndpointRequest",
    "CreateJobRequest",
    "CreateJobRequestMetadataType0",
    "CreateRoutingProfileRequest",
    "CreateUploadRequest",
    "CreatedApiKey",
    "DeviceRequest",
    "ErrorBody",
    "ErrorDetail",
    "EstimateInputs",
    "EstimateMemory",
    "EvalPrompt",
    "EventList",
    "ExpertTargetsType2",
    "ExpertUsage",
    "ExpertUsageList",
    "FileDeleted",
    "FileList",
    "FileObject",
    "Hyperparameters",
    "HyperparametersBatchSize",
    "HyperparametersLearningRateMultiplier",
    "HyperparametersNEpochs",
    "JobCheckpoint",
    "JobError",
    "JobEstimate",
    "JobEvent",
    "JobEventDataType0",
    "JobList",
    "JobMemory",
    "JobMemoryStages",
    "JobObject",
    "JobObjectMetadata",
    "JobObjectMethod",
    "JobObjectResultType0",
    "JobRequirements",
    "JobStatus",
    "LayerExpertUsage",
    "LayerProfile",
    "LineError",
    "LoraOptions",
    "LoraOptionsRankPattern",
    "Method",
    "ModelList",
    "ModelObject",
    "ModelObjectInspectType0",
    "MoeSftQatOptions",
    "MonitorOptions",
    "Mxfp4ScaleRule",
    "Order",
    "PartForm",
    "Precision",
    "ProfileTargets",
    "QatFormat",
    "QatOptions",
    "QatTrainable",
    "RegisterModelRequest",
    "RegisterModelRequestInspect",
    "ResolvedHyperparameters",
    "RotateSecretRequest",
    "RouterMode",
    "RouterOptions",
    "RoutingProfile",
    "RoutingProfileObject",
    "RunnerClassEstimate",
    "RunnerInfo",
    "RunnerInfoLabels",
    "RunnerList",
    "RunnerObject",
    "SftMethod",
    "StageMemory",
    "StreamedEvent",
    "SupervisedMethod",
    "TenantObject",
    "TenantRequest",
    "Throughput",
    "TrainingDevice",
    "TrainingPlan",
    "UpdateEndpointRequest",
    "UploadForm",
    "UploadObject",
    "UploadPart",
    "WebhookAttempt",
    "WebhookAttemptList",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEndpointList",
    "WebhookEvent",
    "WebhookEventData",
    "WebhookEventList",
)
