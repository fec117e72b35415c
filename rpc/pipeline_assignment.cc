// A hub's pipeline assignment (rpc/worker_hub.h): how the registered workers become stages (the
// transport chosen, each stage's shard, KV cache and sizing in its Assignment), and the check of
// the Ready each sends back once loaded.
#include <algorithm>
#include <iostream>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rpc/worker_hub.h"
#include "rpc/worker_link.h"
#include "rpc/worker_protocol.h"
#include "runtime/transport/nccl_transport.h"

namespace bitserve::rpc {

bool WorkerHub::NcclCanJoin() const {
  std::set<std::pair<std::string, std::string>> gpus;
  for (const auto& link : pipeline_) {
    if (link->device_kind != "cuda" || link->pci_bus_id.empty() ||
        !gpus.insert({link->hostname, link->pci_bus_id}).second) {
      return false;
    }
  }
  return true;
}

void WorkerHub::AssignAll() {
  const int n = num_workers();
  const int ep = options_.expert_parallel;
  // One communicator per pipeline formed (every stage and expert-parallel rank): a fresh unique id
  // (its bootstrap root runs here).
  std::string nccl_id;
  if (n > 1 && (options_.pp_transport == PipelineTransport::kNccl ||
                (options_.pp_transport == PipelineTransport::kAuto && NcclCanJoin()))) {
    if (auto id = NewNcclUniqueId(); id.ok()) {
      nccl_id = *std::move(id);
    } else {
      std::cerr << "bitserve serve: no NCCL for this pipeline (" << id.status().message()
                << "); using TCP" << std::endl;
    }
  }
  pipeline_transport_ = nccl_id.empty() ? "tcp" : "nccl";
  if (options_.num_stages > 1) {
    std::vector<int> layers;
    for (const PipelineStage& st : stages_) layers.push_back(st.layer_end - st.layer_begin);
    std::cerr << "bitserve serve: pipeline of " << options_.num_stages << " stages over "
              << pipeline_transport_ << " (" << TransferDtypeName(options_.pp_transfer)
              << " hidden states), layers per stage " << absl::StrJoin(layers, ",")
              << (options_.pipeline_split.empty() ? " (balanced by decode bytes)"
                                                  : " (--pipeline-split)")
              << std::endl;
  }
  if (ep > 1) {
    std::cerr << "bitserve serve: " << options_.num_stages << " expert-parallel group"
              << (options_.num_stages > 1 ? "s" : "") << " of " << ep << " ranks over "
              << pipeline_transport_ << ", " << config_.num_experts / ep
              << " experts per rank (contiguous), "
              << (options_.expert_results == ExpertResultDtype::kBf16 ? "bf16" : "f32")
              << " results" << std::endl;
  }
  for (int i = 0; i < n; ++i) {
    Link& link = *pipeline_[i];
    const PipelineStage& st = stages_[link.stage];
    wire::Assignment& a = *link.assignment.mutable_assignment();
    a.set_assignment_id(next_assignment_++);
    a.set_rank(i);
    a.set_world_size(n);
    a.set_model_dir(options_.model_dir.string());
    wire::ModelShard& shard = *a.mutable_shard();
    shard.set_pipeline_stage(link.stage);
    shard.set_num_pipeline_stages(options_.num_stages);
    shard.set_layer_begin(st.layer_begin);
    shard.set_layer_end(st.end(config_.num_hidden_layers));
    shard.set_has_embedding(st.first());
    shard.set_has_lm_head(st.last());
    shard.set_expert_group(link.stage);
    shard.set_expert_group_size(ep);
    shard.set_rank_in_expert_group(link.ep_rank);
    for (int e = 0; e < config_.num_experts; ++e) {
      if (ep == 1 || expert_owner_[e] == link.ep_rank) shard.add_expert_ids(e);
    }
    shard.set_lm_head_dtype(LmHeadDtypeToProto(options_.engine.lm_head_dtype));
    if (ep > 1) {
      shard.mutable_expert_owner()->Add(expert_owner_.begin(), expert_owner_.end());
      shard.set_expert_results_bf16(options_.expert_results == ExpertResultDtype::kBf16);
    }
    wire::KvCacheSpec& kv = *a.mutable_kv_cache();
    kv.set_block_size(options_.engine.block_size);
    if (options_.engine.kv_dtype) kv.set_dtype(KvDtypeToProto(*options_.engine.kv_dtype));
    if (options_.engine.kv_rotation)
      kv.set_rotation(KvRotationToProto(*options_.engine.kv_rotation));
    kv.set_num_blocks(num_kv_blocks_ > 0 ? num_kv_blocks_ : options_.engine.num_kv_blocks);
    // Stages that share a GPU split its memory.
    int sharing = 0;
    for (const auto& other : pipeline_) {
      sharing += other->device_kind == "cuda" && !other->pci_bus_id.empty() &&
                 other->hostname == link.hostname && other->pci_bus_id == link.pci_bus_id;
    }
    kv.set_memory_fraction(options_.engine.kv_memory_fraction / std::max(1, sharing));
    if (n > 1) {
      wire::TransportSpec& t = *a.mutable_transport();
      t.set_activation_dtype(TransferDtypeToProto(options_.pp_transfer));
      if (!nccl_id.empty()) {
        t.mutable_nccl()->set_unique_id(nccl_id);
        t.mutable_nccl()->set_rank(i);
        t.mutable_nccl()->set_world_size(n);
      } else {
        t.mutable_cpu()->set_rank(i);
        for (const auto& peer : pipeline_)
          t.mutable_cpu()->add_peer_addresses(peer->transport_address);
      }
    }
    a.set_max_batch_tokens(options_.engine.max_batch_tokens);
    a.set_dummy_weights(options_.engine.load_format == LoadFormat::kDummy);
    a.set_max_model_len(static_cast<int32_t>(options_.engine.max_model_len));
    a.set_heartbeat_interval_ms(static_cast<int32_t>(options_.heartbeat_interval.count()));
    a.set_heartbeat_timeout_ms(static_cast<int32_t>(options_.heartbeat_timeout.count()));
    link.assigned = true;
    link.last_heard = WorkerLinkClock::now();
  }
  changed_.notify_all();
}

absl::Status WorkerHub::AcceptReady(Link& link, const wire::Ready& r) {
  if (r.vocab_size() != config_.vocab_size || r.num_hidden_layers() != config_.num_hidden_layers ||
      r.hidden_size() != config_.hidden_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "it loaded a model with vocab ", r.vocab_size(), ", ", r.num_hidden_layers(),
        " layers, hidden ", r.hidden_size(), "; the coordinator's has ", config_.vocab_size, ", ",
        config_.num_hidden_layers, ", ", config_.hidden_size));
  }
  absl::StatusOr<std::optional<KvDtype>> kv_dtype =
      KvDtypeFromProto(r.kv_dtype(), "Ready.kv_dtype");
  if (!kv_dtype.ok() || !kv_dtype->has_value() ||
      (options_.engine.kv_dtype && **kv_dtype != *options_.engine.kv_dtype)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "it keeps its KV cache as ",
        kv_dtype.ok() && kv_dtype->has_value() ? KvDtypeName(**kv_dtype) : "an unknown type",
        options_.engine.kv_dtype
            ? absl::StrCat("; expected ", KvDtypeName(*options_.engine.kv_dtype))
            : std::string()));
  }
  link.kv_dtype = **kv_dtype;
  // Every stage must rotate its keys as asked (or, unasked, as its dtype's default): a query of
  // one convention against keys of the other is wrong attention, not a quality change.
  const KvRotation expected_rotation =
      options_.engine.kv_rotation.value_or(DefaultKvRotation(link.kv_dtype));
  absl::StatusOr<std::optional<KvRotation>> kv_rotation =
      KvRotationFromProto(r.kv_rotation(), "Ready.kv_rotation");
  if (!kv_rotation.ok() || !kv_rotation->has_value() || **kv_rotation != expected_rotation) {
    return absl::FailedPreconditionError(
        absl::StrCat("it rotates its cached keys by ",
                     kv_rotation.ok() && kv_rotation->has_value() ? KvRotationName(**kv_rotation)
                                                                  : "an unknown rotation",
                     "; expected ", KvRotationName(expected_rotation)));
  }
  link.kv_rotation = **kv_rotation;
  absl::StatusOr<LmHeadDtype> lm_head =
      LmHeadDtypeFromProto(r.lm_head_dtype(), "Ready.lm_head_dtype");
  if (!lm_head.ok() || *lm_head != options_.engine.lm_head_dtype) {
    return absl::FailedPreconditionError(absl::StrCat(
        "its LM head is ", lm_head.ok() ? LmHeadDtypeName(*lm_head) : "of an unknown type",
        "; expected ", LmHeadDtypeName(options_.engine.lm_head_dtype)));
  }
  if (r.num_kv_blocks() <= 0 || r.block_size() != options_.engine.block_size) {
    return absl::FailedPreconditionError(
        absl::StrCat("it allocated ", r.num_kv_blocks(), " KV blocks of ", r.block_size(),
                     " tokens; expected blocks of ", options_.engine.block_size));
  }
  if (pipelines_ready_ > 0 &&
      (r.num_kv_blocks() < num_kv_blocks_ || r.max_model_len() < max_model_len_ ||
       r.max_batch_tokens() < max_batch_tokens_)) {
    return absl::FailedPreconditionError(
        absl::StrCat("a replacement must hold what the first workers held: ", r.num_kv_blocks(),
                     " KV blocks, max_model_len ", r.max_model_len(), ", max_batch_tokens ",
                     r.max_batch_tokens(), " vs ", num_kv_blocks_, ", ", max_model_len_, ", ",
                     max_batch_tokens_));
  }
  link.ready = true;
  link.num_kv_blocks = r.num_kv_blocks();
  link.max_model_len = r.max_model_len();
  link.max_batch_tokens = r.max_batch_tokens();
  link.device = r.device_name();
  const int n = num_workers();
  std::cerr << "bitserve serve: worker " << link.Name() << " ready on " << r.device_name() << ": "
            << r.num_kv_blocks() << " KV blocks, loaded in " << r.load_seconds() << " s"
            << std::endl;
  if (!Whole()) return absl::OkStatus();
  if (pipelines_ready_ == 0) {
    // The scheduler's limits: what every stage can hold.
    num_kv_blocks_ = pipeline_[0]->num_kv_blocks;
    max_model_len_ = pipeline_[0]->max_model_len;
    max_batch_tokens_ = pipeline_[0]->max_batch_tokens;
    for (const auto& l : pipeline_) {
      num_kv_blocks_ = std::min(num_kv_blocks_, l->num_kv_blocks);
      max_model_len_ = std::min(max_model_len_, l->max_model_len);
      max_batch_tokens_ = std::min(max_batch_tokens_, l->max_batch_tokens);
    }
    block_size_ = r.block_size();
    kv_dtype_ = pipeline_[0]->kv_dtype;
    kv_rotation_ = pipeline_[0]->kv_rotation;
    const int stages = options_.num_stages, ep = options_.expert_parallel;
    device_name_ =
        n == 1 ? absl::StrCat("worker ", link.worker_id, " ", link.device)
        : ep == 1
            ? absl::StrCat(stages, "-stage pipeline of workers over ", pipeline_transport_, " (",
                           pipeline_[0]->device, ")")
            : absl::StrCat(stages > 1 ? absl::StrCat(stages, "-stage pipeline of ") : "",
                           "expert-parallel group", stages > 1 ? "s" : "", " of ", ep,
                           " workers over ", pipeline_transport_, " (", pipeline_[0]->device, ")");
  }
  ++epoch_;
  ++pipelines_ready_;
  if (n > 1) std::cerr << "bitserve serve: pipeline of " << n << " workers ready" << std::endl;
  changed_.notify_all();
  return absl::OkStatus();
}

}  // namespace bitserve::rpc
