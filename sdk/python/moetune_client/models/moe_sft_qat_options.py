from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.auto_world_size import AutoWorldSize
from ..models.base_expert_format import BaseExpertFormat
from ..models.device_request import DeviceRequest
from ..models.precision import Precision
from ..models.sft_method import SftMethod
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.eval_prompt import EvalPrompt
    from ..models.lora_options import LoraOptions
    from ..models.monitor_options import MonitorOptions
    from ..models.qat_options import QatOptions
    from ..models.router_options import RouterOptions


T = TypeVar("T", bound="MoeSftQatOptions")


@_attrs_define
class MoeSftQatOptions:
    """Native MoE options (`method.moe_sft_qat`). Every field has a documented default.

    Attributes:
        base_expert_format (BaseExpertFormat | None | Unset):
        checkpoint_every_n_steps (int | Unset): Save a resumable checkpoint every this many steps (and at each stage
            end); 0 = stage ends only.
            Default 100; jobs created through the API take 0 or at least 10. A job keeps its newest 3
            periodic checkpoints and its stage finals; kept checkpoints count against storage. Default: 100.
        cpu_offload (bool | Unset): With `fully_sharded`: keep each rank's shards in host memory, in fp32, with their
            gradients and
            optimiser state, and run the optimiser step on the CPU (ZeRO-Offload / FSDP's CPU offload).
            The GPU then holds only the layer being run, at the cost of host-device copies. Default false. Default: False.
        device (DeviceRequest | Unset): Which kind of runner may take a job.
        eval_prompts (list[EvalPrompt] | Unset): Optional task accuracy: prompts with expected answers, scored by greedy
            decoding.
        expert_parallel (bool | Unset): Split every MoE layer's routed experts across the job's ranks (expert
            parallelism): each rank
            holds `num_experts / world_size` of them, and tokens reach their experts' ranks by all-to-all.
            Needs `world_size` of 2 or more, dividing the model's number of experts. Default false: every
            rank holds the whole model. Not yet combined with LoRA on the experts, packed base experts or
            activation quantization. Default: False.
        fully_sharded (bool | Unset): Split every weight across the job's ranks (FSDP / ZeRO-3): each rank holds
            1/`world_size` of
            every weight, gradient and optimiser state, and a decoder layer's weights are gathered whole
            only while it runs. Needs `world_size` of 2 or more and `sft_method: full`; activation
            checkpointing is implied. Default false. Not yet combined with `expert_parallel`. Default: False.
        gradient_accumulation_steps (int | Unset): Micro-batches accumulated per optimiser step. Default 1. Default: 1.
        gradient_checkpointing (bool | None | Unset): Recompute each decoder layer in the backward instead of keeping
            its activations (less memory,
            about one more forward of compute). Default: on for CUDA, off on CPU.
        learning_rate (float | Unset): Peak SFT learning rate. Default 1e-5 (the MoE range; dense-LoRA rates collapse
            routers). Default: 1e-05.
        log_every_n_steps (int | Unset): Emit a metrics event every this many steps. Default 1. Default: 1.
        lora (LoraOptions | Unset): LoRA settings (PEFT's names and meanings).
        max_grad_norm (float | Unset): Gradients are clipped to this global norm. Default 1.0. Default: 1.0.
        max_steps (int | None | Unset): SFT optimiser steps; default: `n_epochs` passes over the training data.
        monitor (MonitorOptions | Unset): The expert-usage monitor (docs/design.md); thresholds are job options.
        packing (bool | Unset): Pack several examples into each sequence of `seq_len` tokens. Default false. Default:
            False.
        precision (Precision | Unset): Numeric precision of training.
        qat (QatOptions | Unset): Quantization-aware training after SFT.
        response_only_loss (bool | Unset): Compute the loss on response tokens only. Default true. Default: True.
        router (RouterOptions | Unset): Router protection (docs/design.md).
        seq_len (int | Unset): Tokens per training sequence (longer examples are truncated). Default 512. Default: 512.
        sft_method (SftMethod | Unset): What the SFT stage trains.
        validation_split (float | Unset): Fraction of the training file held out for validation when no
            `validation_file` is given. Default 0.1. Default: 0.1.
        warmup_ratio (float | Unset): Fraction of the SFT steps spent warming up linearly. Default 0.1. Default: 0.1.
        weight_decay (float | Unset): AdamW weight decay (not applied to norms and biases). Default 0. Default: 0.0.
        world_size (AutoWorldSize | int | Unset): `world_size`: a number of ranks (1 to 64), or `"auto"` for the API to
            choose the fewest that fit.
    """

    base_expert_format: BaseExpertFormat | None | Unset = UNSET
    checkpoint_every_n_steps: int | Unset = 100
    cpu_offload: bool | Unset = False
    device: DeviceRequest | Unset = UNSET
    eval_prompts: list[EvalPrompt] | Unset = UNSET
    expert_parallel: bool | Unset = False
    fully_sharded: bool | Unset = False
    gradient_accumulation_steps: int | Unset = 1
    gradient_checkpointing: bool | None | Unset = UNSET
    learning_rate: float | Unset = 1e-05
    log_every_n_steps: int | Unset = 1
    lora: LoraOptions | Unset = UNSET
    max_grad_norm: float | Unset = 1.0
    max_steps: int | None | Unset = UNSET
    monitor: MonitorOptions | Unset = UNSET
    packing: bool | Unset = False
    precision: Precision | Unset = UNSET
    qat: QatOptions | Unset = UNSET
    response_only_loss: bool | Unset = True
    router: RouterOptions | Unset = UNSET
    seq_len: int | Unset = 512
    sft_method: SftMethod | Unset = UNSET
    validation_split: float | Unset = 0.1
    warmup_ratio: float | Unset = 0.1
    weight_decay: float | Unset = 0.0
    world_size: AutoWorldSize | int | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        base_expert_format: None | str | Unset
        if isinstance(self.base_expert_format, Unset):
            base_expert_format = UNSET
        elif isinstance(self.base_expert_format, BaseExpertFormat):
            base_expert_format = self.base_expert_format.value
        else:
            base_expert_format = self.base_expert_format

        checkpoint_every_n_steps = self.checkpoint_every_n_steps

        cpu_offload = self.cpu_offload

        device: str | Unset = UNSET
        if not isinstance(self.device, Unset):
            device = self.device.value

        eval_prompts: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.eval_prompts, Unset):
            eval_prompts = []
            for eval_prompts_item_data in self.eval_prompts:
                eval_prompts_item = eval_prompts_item_data.to_dict()
                eval_prompts.append(eval_prompts_item)

        expert_parallel = self.expert_parallel

        fully_sharded = self.fully_sharded

        gradient_accumulation_steps = self.gradient_accumulation_steps

        gradient_checkpointing: bool | None | Unset
        if isinstance(self.gradient_checkpointing, Unset):
            gradient_checkpointing = UNSET
        else:
            gradient_checkpointing = self.gradient_checkpointing

        learning_rate = self.learning_rate

        log_every_n_steps = self.log_every_n_steps

        lora: dict[str, Any] | Unset = UNSET
        if not isinstance(self.lora, Unset):
            lora = self.lora.to_dict()

        max_grad_norm = self.max_grad_norm

        max_steps: int | None | Unset
        if isinstance(self.max_steps, Unset):
            max_steps = UNSET
        else:
            max_steps = self.max_steps

        monitor: dict[str, Any] | Unset = UNSET
        if not isinstance(self.monitor, Unset):
            monitor = self.monitor.to_dict()

        packing = self.packing

        precision: str | Unset = UNSET
        if not isinstance(self.precision, Unset):
            precision = self.precision.value

        qat: dict[str, Any] | Unset = UNSET
        if not isinstance(self.qat, Unset):
            qat = self.qat.to_dict()

        response_only_loss = self.response_only_loss

        router: dict[str, Any] | Unset = UNSET
        if not isinstance(self.router, Unset):
            router = self.router.to_dict()

        seq_len = self.seq_len

        sft_method: str | Unset = UNSET
        if not isinstance(self.sft_method, Unset):
            sft_method = self.sft_method.value

        validation_split = self.validation_split

        warmup_ratio = self.warmup_ratio

        weight_decay = self.weight_decay

        world_size: int | str | Unset
        if isinstance(self.world_size, Unset):
            world_size = UNSET
        elif isinstance(self.world_size, AutoWorldSize):
            world_size = self.world_size.value
        else:
            world_size = self.world_size

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if base_expert_format is not UNSET:
            field_dict["base_expert_format"] = base_expert_format
        if checkpoint_every_n_steps is not UNSET:
            field_dict["checkpoint_every_n_steps"] = checkpoint_every_n_steps
        if cpu_offload is not UNSET:
            field_dict["cpu_offload"] = cpu_offload
        if device is not UNSET:
            field_dict["device"] = device
        if eval_prompts is not UNSET:
            field_dict["eval_prompts"] = eval_prompts
        if expert_parallel is not UNSET:
            field_dict["expert_parallel"] = expert_parallel
        if fully_sharded is not UNSET:
            field_dict["fully_sharded"] = fully_sharded
        if gradient_accumulation_steps is not UNSET:
            field_dict["gradient_accumulation_steps"] = gradient_accumulation_steps
        if gradient_checkpointing is not UNSET:
            field_dict["gradient_checkpointing"] = gradient_checkpointing
        if learning_rate is not UNSET:
            field_dict["learning_rate"] = learning_rate
        if log_every_n_steps is not UNSET:
            field_dict["log_every_n_steps"] = log_every_n_steps
        if lora is not UNSET:
            field_dict["lora"] = lora
        if max_grad_norm is not UNSET:
            field_dict["max_grad_norm"] = max_grad_norm
        if max_steps is not UNSET:
            field_dict["max_steps"] = max_steps
        if monitor is not UNSET:
            field_dict["monitor"] = monitor
        if packing is not UNSET:
            field_dict["packing"] = packing
        if precision is not UNSET:
            field_dict["precision"] = precision
        if qat is not UNSET:
            field_dict["qat"] = qat
        if response_only_loss is not UNSET:
            field_dict["response_only_loss"] = response_only_loss
        if router is not UNSET:
            field_dict["router"] = router
        if seq_len is not UNSET:
            field_dict["seq_len"] = seq_len
        if sft_method is not UNSET:
            field_dict["sft_method"] = sft_method
        if validation_split is not UNSET:
            field_dict["validation_split"] = validation_split
        if warmup_ratio is not UNSET:
            field_dict["warmup_ratio"] = warmup_ratio
        if weight_decay is not UNSET:
            field_dict["weight_decay"] = weight_decay
        if world_size is not UNSET:
            field_dict["world_size"] = world_size

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.eval_prompt import EvalPrompt
        from ..models.lora_options import LoraOptions
        from ..models.monitor_options import MonitorOptions
        from ..models.qat_options import QatOptions
        from ..models.router_options import RouterOptions

        d = dict(src_dict)

        def _parse_base_expert_format(data: object) -> BaseExpertFormat | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                base_expert_format_type_1 = BaseExpertFormat(data)

                return base_expert_format_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(BaseExpertFormat | None | Unset, data)

        base_expert_format = _parse_base_expert_format(
            d.pop("base_expert_format", UNSET)
        )

        checkpoint_every_n_steps = d.pop("checkpoint_every_n_steps", UNSET)

        cpu_offload = d.pop("cpu_offload", UNSET)

        _device = d.pop("device", UNSET)
        device: DeviceRequest | Unset
        if isinstance(_device, Unset):
            device = UNSET
        else:
            device = DeviceRequest(_device)

        _eval_prompts = d.pop("eval_prompts", UNSET)
        eval_prompts: list[EvalPrompt] | Unset = UNSET
        if _eval_prompts is not UNSET:
            eval_prompts = []
            for eval_prompts_item_data in _eval_prompts:
                eval_prompts_item = EvalPrompt.from_dict(eval_prompts_item_data)

                eval_prompts.append(eval_prompts_item)

        expert_parallel = d.pop("expert_parallel", UNSET)

        fully_sharded = d.pop("fully_sharded", UNSET)

        gradient_accumulation_steps = d.pop("gradient_accumulation_steps", UNSET)

        def _parse_gradient_checkpointing(data: object) -> bool | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(bool | None | Unset, data)

        gradient_checkpointing = _parse_gradient_checkpointing(
            d.pop("gradient_checkpointing", UNSET)
        )

        learning_rate = d.pop("learning_rate", UNSET)

        log_every_n_steps = d.pop("log_every_n_steps", UNSET)

        _lora = d.pop("lora", UNSET)
        lora: LoraOptions | Unset
        if isinstance(_lora, Unset):
            lora = UNSET
        else:
            lora = LoraOptions.from_dict(_lora)

        max_grad_norm = d.pop("max_grad_norm", UNSET)

        def _parse_max_steps(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_steps = _parse_max_steps(d.pop("max_steps", UNSET))

        _monitor = d.pop("monitor", UNSET)
        monitor: MonitorOptions | Unset
        if isinstance(_monitor, Unset):
            monitor = UNSET
        else:
            monitor = MonitorOptions.from_dict(_monitor)

        packing = d.pop("packing", UNSET)

        _precision = d.pop("precision", UNSET)
        precision: Precision | Unset
        if isinstance(_precision, Unset):
            precision = UNSET
        else:
            precision = Precision(_precision)

        _qat = d.pop("qat", UNSET)
        qat: QatOptions | Unset
        if isinstance(_qat, Unset):
            qat = UNSET
        else:
            qat = QatOptions.from_dict(_qat)

        response_only_loss = d.pop("response_only_loss", UNSET)

        _router = d.pop("router", UNSET)
        router: RouterOptions | Unset
        if isinstance(_router, Unset):
            router = UNSET
        else:
            router = RouterOptions.from_dict(_router)

        seq_len = d.pop("seq_len", UNSET)

        _sft_method = d.pop("sft_method", UNSET)
        sft_method: SftMethod | Unset
        if isinstance(_sft_method, Unset):
            sft_method = UNSET
        else:
            sft_method = SftMethod(_sft_method)

        validation_split = d.pop("validation_split", UNSET)

        warmup_ratio = d.pop("warmup_ratio", UNSET)

        weight_decay = d.pop("weight_decay", UNSET)

        def _parse_world_size(data: object) -> AutoWorldSize | int | Unset:
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                componentsschemas_world_size_request_type_1 = AutoWorldSize(data)

                return componentsschemas_world_size_request_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(AutoWorldSize | int | Unset, data)

        world_size = _parse_world_size(d.pop("world_size", UNSET))

        moe_sft_qat_options = cls(
            base_expert_format=base_expert_format,
            checkpoint_every_n_steps=checkpoint_every_n_steps,
            cpu_offload=cpu_offload,
            device=device,
            eval_prompts=eval_prompts,
            expert_parallel=expert_parallel,
            fully_sharded=fully_sharded,
            gradient_accumulation_steps=gradient_accumulation_steps,
            gradient_checkpointing=gradient_checkpointing,
            learning_rate=learning_rate,
            log_every_n_steps=log_every_n_steps,
            lora=lora,
            max_grad_norm=max_grad_norm,
            max_steps=max_steps,
            monitor=monitor,
            packing=packing,
            precision=precision,
            qat=qat,
            response_only_loss=response_only_loss,
            router=router,
            seq_len=seq_len,
            sft_method=sft_method,
            validation_split=validation_split,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            world_size=world_size,
        )

        return moe_sft_qat_options
