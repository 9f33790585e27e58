#include "search/ann.h"

#include "io/fsutil.h"
#include "util/json.h"
#include "util/json_value.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#if TORCHCLIP_HAVE_FAISS
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/clone_index.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <fcntl.h>
#include <unistd.h>

namespace torchclip {

std::string default_ann_type(int64_t rows, int64_t dim, int64_t memory_bytes) {
#if !TORCHCLIP_HAVE_FAISS
  return "exact";  // a build without FAISS has only the exact scan
#endif
  if (rows <= 100000) return "exact";
  const int64_t hnsw_bytes = rows * (dim * 4 + 32 * 2 * 8);  // float rows + links at M = 32
  if (hnsw_bytes <= memory_bytes / 4) return "hnsw";
  return "ivf-pq";
}

#if TORCHCLIP_HAVE_FAISS

void AnnIndex::FaissDeleter::operator()(faiss::Index* p) const { delete p; }

namespace {

constexpr char kMagic[] = "TORCHCLIP-FAISS1\n";  // then 8 bytes of header length (little-endian), the JSON header, FAISS's bytes
constexpr int64_t kAddChunk = 65536;              // rows converted to float and added at a time

const char* kTypes = "flat, ivf-flat, ivf-pq, hnsw";

int64_t pow2_near(double v) { return int64_t{1} << static_cast<int>(std::lround(std::log2(std::max(1.0, v)))); }

std::string new_build_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

/// Rows [lo, hi) of `rows` as contiguous float.
at::Tensor float_rows(const at::Tensor& rows, int64_t lo, int64_t hi) { return rows.slice(0, lo, hi).to(at::kFloat).contiguous(); }

void add_all(faiss::Index& index, const at::Tensor& rows) {
  for (int64_t lo = 0; lo < rows.size(0); lo += kAddChunk) {
    const auto x = float_rows(rows, lo, std::min(rows.size(0), lo + kAddChunk));
    index.add(x.size(0), x.data_ptr<float>());
  }
}

/// Points stdout (fd 1) at /dev/null for as long as it lives.
class MuteStdout {
 public:
  MuteStdout() : saved_(::dup(1)), null_(::open("/dev/null", O_WRONLY)) {
    std::fflush(stdout);
    if (saved_ >= 0 && null_ >= 0) ::dup2(null_, 1);
  }
  ~MuteStdout() {
    std::fflush(stdout);
    if (saved_ >= 0) {
      ::dup2(saved_, 1);
      ::close(saved_);
    }
    if (null_ >= 0) ::close(null_);
  }
  MuteStdout(const MuteStdout&) = delete;
  MuteStdout& operator=(const MuteStdout&) = delete;

 private:
  int saved_, null_;
};

int64_t number(const std::map<std::string, std::string>& info, const char* key) {
  const auto it = info.find(key);
  return it == info.end() ? 0 : std::stoll(it->second);
}

}  // namespace

AnnIndex::AnnIndex() = default;
AnnIndex::~AnnIndex() = default;
AnnIndex::AnnIndex(AnnIndex&&) noexcept = default;
AnnIndex& AnnIndex::operator=(AnnIndex&&) noexcept = default;

AnnIndex AnnIndex::build(const at::Tensor& rows, const AnnOptions& o) {
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) > 0, "ann: rows must be [N, E] with N > 0, got ", rows.sizes());
  const int64_t N = rows.size(0), E = rows.size(1);
  AnnIndex a;
  auto& info = a.info_;
  const std::string type = o.type();
  info["type"] = type;
  info["rows"] = std::to_string(N);
  info["dim"] = std::to_string(E);
  info["build_id"] = new_build_id();
  info["train_id"] = info["build_id"];  // refill() keeps it: the parts of one training can merge
  try {
    if (type == "flat") {
      a.index_.reset(new faiss::IndexFlatIP(E));
    } else if (type == "hnsw") {
      if (o.hnsw_m() < 4 || o.hnsw_m() > 256) throw std::invalid_argument(fmt::format("--hnsw-m {}: must be from 4 to 256", o.hnsw_m()));
      // L2: on unit rows and queries ||x - q||^2 = 2 - 2 x.q, the same order as inner product, and
      // the metric HNSW's graph construction is made for. (An inner-product graph missed the best
      // of near-duplicate rows in the tools test, though at a search breadth of 16, before ef was
      // applied as below; not measured since.) Scores are replaced by exact ones in search().
      a.index_.reset(new faiss::IndexHNSWFlat(static_cast<int>(E), static_cast<int>(o.hnsw_m()), faiss::METRIC_L2));
      info["hnsw_m"] = std::to_string(o.hnsw_m());
    } else if (type == "ivf-flat" || type == "ivf-pq") {
      const int64_t nlist = o.nlist() > 0 ? o.nlist() : std::clamp<int64_t>(pow2_near(2 * std::sqrt(static_cast<double>(N))), 16, 65536);
      // More lists than rows would leave lists empty (and k-means needs a training row per list).
      if (nlist > N)
        throw std::invalid_argument(fmt::format("{} {} is more than the {} rows to index: give --nlist {} or fewer",
                                                o.nlist() > 0 ? "--nlist" : "the default nlist (2 sqrt(rows), at least 16)", nlist, N, N));
      const int64_t train = o.train_rows() > 0 ? std::min(o.train_rows(), N) : std::min(N, std::max<int64_t>(256, 40 * nlist));  // FAISS asks for 39 per list
      if (train < nlist)
        throw std::invalid_argument(fmt::format("--train-rows {} is fewer than --nlist {}: k-means needs a row per list", train, nlist));
      const int64_t m = o.pq_m() > 0 ? o.pq_m() : std::max<int64_t>(1, E / 8);
      if (type == "ivf-pq" && E % m != 0)
        throw std::invalid_argument(fmt::format("--pq-m {} must divide the embedding size {} (e.g. {})", m, E, std::max<int64_t>(1, E / 8)));
      if (type == "ivf-pq" && train < 256)
        throw std::invalid_argument(fmt::format("ivf-pq needs at least 256 training rows (8-bit codebooks), got {}", train));
      auto quantizer = std::make_unique<faiss::IndexFlatIP>(E);
      std::unique_ptr<faiss::IndexIVF> ivf;
      if (type == "ivf-flat") {
        ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer.get(), E, nlist, faiss::METRIC_INNER_PRODUCT);
      } else {
        ivf = std::make_unique<faiss::IndexIVFPQ>(quantizer.get(), E, nlist, m, 8, faiss::METRIC_INNER_PRODUCT);
        info["pq_m"] = std::to_string(m);
      }
      quantizer.release();
      ivf->own_fields = true;  // the IVF index deletes its quantizer
      ivf->nprobe = static_cast<size_t>(std::min(nlist, std::max<int64_t>(8, nlist / 32)));
      auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed());
      const auto pick = at::randperm(N, gen, at::kLong).slice(0, 0, train);  // [train]
      const auto sample = rows.index_select(0, pick).to(at::kFloat).contiguous();
      ivf->cp.seed = static_cast<int>(o.seed());
      ivf->cp.niter = 10;  // FAISS defaults to 25: 2.5x the training time (the figures in the README used 10)
      ivf->train(train, sample.data_ptr<float>());
      info["nlist"] = std::to_string(nlist);
      info["nprobe"] = std::to_string(ivf->nprobe);
      info["train_rows"] = std::to_string(train);
      a.index_.reset(ivf.release());
    } else {
      throw std::invalid_argument(fmt::format("--type '{}': valid: exact, {}, auto", type, kTypes));
    }
    add_all(*a.index_, rows);
  } catch (const faiss::FaissException& e) {
    throw std::runtime_error(fmt::format("FAISS could not build the {} index: {}", type, e.msg));
  }
  return a;
}

AnnIndex AnnIndex::refill(const at::Tensor& rows) const {
  if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get());
      ivf && !dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists))
    throw std::invalid_argument("this FAISS index was merged from shards (its lists are on disk): update the shards and merge "
                                "them again with torchclip index --merge");
  if (!dynamic_cast<const faiss::IndexIVF*>(index_.get())) {
    // Flat and HNSW have no training to keep: built again with the same parameters. (FAISS
    // 1.7.3's clone_index copies an IndexHNSWFlat as a bare IndexHNSW, which cannot be saved.)
    const auto m = info_.find("hnsw_m");
    AnnIndex a = build(rows, AnnOptions().type(type()).hnsw_m(m == info_.end() ? 32 : std::stoll(m->second)));
    a.info_["train_id"] = info_.at("train_id");
    return a;
  }
  AnnIndex a;
  a.info_ = info_;
  a.info_["rows"] = std::to_string(rows.size(0));
  a.info_["build_id"] = new_build_id();
  try {
    a.index_.reset(faiss::clone_index(index_.get()));
    a.index_->reset();  // IVF keeps its centroids and codebooks
    add_all(*a.index_, rows);
  } catch (const faiss::FaissException& e) {
    throw std::runtime_error(fmt::format("FAISS could not update the {} index: {}", type(), e.msg));
  }
  return a;
}

AnnIndex AnnIndex::merge_on_disk(std::vector<AnnIndex> parts, const std::vector<std::vector<int64_t>>& id_maps,
                                 const std::vector<std::string>& names, const std::string& ivfdata_prefix) {
  TORCH_CHECK(!parts.empty() && parts.size() == id_maps.size() && parts.size() == names.size(), "ann: merge needs one id map per part");
  const std::string type = parts[0].type();
  if (type != "ivf-flat" && type != "ivf-pq")
    throw std::invalid_argument(fmt::format("merging needs IVF indexes (--type ivf-flat or ivf-pq), not {}", type));
  std::vector<const faiss::InvertedLists*> lists;
  int64_t total = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    auto& part = parts[p];
    if (part.type() != type || part.info_.at("train_id") != parts[0].info_.at("train_id"))
      throw std::invalid_argument(fmt::format("{} ({}, training {}) was not trained with {} ({}, training {}): build every shard "
                                              "with --trained FIRST_SHARD so that they share centroids and codebooks",
                                              names[p], part.type(), part.info_.at("train_id"), names[0], type,
                                              parts[0].info_.at("train_id")));
    auto* ivf = dynamic_cast<faiss::IndexIVF*>(part.index_.get());
    auto* array = ivf ? dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists) : nullptr;
    if (!array) throw std::invalid_argument(fmt::format("{}: was merged already (its lists are on disk): merge its shards", names[p]));
    const auto& map = id_maps[p];
    for (auto& ids : array->ids)  // row numbers of the part -> rows of the merged index
      for (auto& id : ids) {
        if (id < 0 || id >= static_cast<int64_t>(map.size()))
          throw std::runtime_error(fmt::format("{}: id {} is past its {} rows", names[p], id, map.size()));
        id = map[static_cast<size_t>(id)];
      }
    lists.push_back(array);
    total += ivf->ntotal;
  }
  AnnIndex merged;
  merged.info_ = parts[0].info_;
  merged.info_["rows"] = std::to_string(total);
  merged.info_["build_id"] = new_build_id();
  // Named by the build: an index being searched keeps its own lists until this one replaces it.
  const std::string ivfdata_path = fmt::format("{}.{}.ivfdata", ivfdata_prefix, merged.info_["build_id"]);
  merged.info_["ivfdata"] = std::filesystem::path(ivfdata_path).filename().string();
  struct RemoveUnlessKept {  // a failed merge leaves no partial lists behind
    const std::string& path;
    bool keep = false;
    ~RemoveUnlessKept() {
      if (!keep) std::remove(path.c_str());
    }
  } cleanup{ivfdata_path};
  try {
    auto* first = dynamic_cast<faiss::IndexIVF*>(parts[0].index_.get());
    auto on_disk = std::make_unique<faiss::OnDiskInvertedLists>(first->nlist, first->code_size, ivfdata_path.c_str());
    on_disk->merge_from(lists.data(), static_cast<int>(lists.size()));
    if (const int fd = ::open(ivfdata_path.c_str(), O_RDONLY); fd >= 0) {  // on disk before an index names it
      ::fsync(fd);
      ::close(fd);
    }
    std::unique_ptr<faiss::IndexIVF> index(dynamic_cast<faiss::IndexIVF*>(faiss::clone_index(first)));
    index->replace_invlists(on_disk.release(), /*own=*/true);
    index->ntotal = total;
    merged.index_.reset(index.release());
  } catch (const faiss::FaissException& e) {
    throw std::runtime_error(fmt::format("FAISS could not merge into {}: {}", ivfdata_path, e.msg));
  }
  cleanup.keep = true;
  return merged;
}

int64_t AnnIndex::save(const std::string& path) const {
  std::string header = "{";
  for (const auto& [k, v] : info_)
    if (k != "bytes") header += fmt::format("{}{}: {}", header.size() > 1 ? ", " : "", json_quote(k), json_quote(v));
  header += "}";
  std::string head(kMagic, sizeof kMagic - 1);
  const uint64_t n = header.size();
  for (int b = 0; b < 8; ++b) head += static_cast<char>((n >> (8 * b)) & 0xFF);
  head += header;
  // Streamed into a temporary beside PATH (FAISS's bytes are never held twice), then renamed.
  int fd = -1;
  const std::string tmp = make_temp_beside(path, fd);
  FILE* f = fdopen(dup(fd), "wb");
  bool ok = f && std::fwrite(head.data(), 1, head.size(), f) == head.size();
  std::string error = ok ? "" : std::strerror(errno);
  if (ok) {
    try {
      faiss::FileIOWriter writer(f);
      faiss::write_index(index_.get(), &writer);
    } catch (const faiss::FaissException& e) {
      ok = false;
      error = e.msg;
    }
  }
  const long end = f ? std::ftell(f) : -1;
  if (f && std::fclose(f) != 0 && ok) {
    ok = false;
    error = std::strerror(errno);
  }
  if (!ok) {
    ::close(fd);
    std::remove(tmp.c_str());
    throw std::runtime_error(fmt::format("{}: cannot write the FAISS index: {}", path, error));
  }
  commit_temp(fd, tmp, path);
  return end - static_cast<long>(head.size());
}

AnnIndex AnnIndex::load(const std::string& path, const std::string& model_fingerprint, int64_t rows, const std::string& build_id) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw std::runtime_error(fmt::format("{}: cannot open the FAISS index beside the index: {}", path, std::strerror(errno)));
  char magic[sizeof kMagic - 1];
  unsigned char len[8];
  if (std::fread(magic, 1, sizeof magic, f.get()) != sizeof magic || std::memcmp(magic, kMagic, sizeof magic) != 0 ||
      std::fread(len, 1, 8, f.get()) != 8)
    throw std::runtime_error(fmt::format("{}: not a torchclip FAISS index (it must start with {:?})", path, std::string(kMagic, 16)));
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = n << 8 | len[b];
  if (n > (1u << 20)) throw std::runtime_error(fmt::format("{}: a header of {} bytes is not plausible", path, n));
  std::string header(n, '\0');
  if (std::fread(header.data(), 1, n, f.get()) != n) throw std::runtime_error(fmt::format("{}: the header is truncated", path));
  AnnIndex a;
  try {
    const auto j = JsonValue::parse(header);
    for (size_t i = 0; i < j.keys().size(); ++i)
      if (j.items()[i].is_string()) a.info_[j.keys()[i]] = j.items()[i].string();
  } catch (const JsonError& e) {
    throw std::runtime_error(fmt::format("{}: header: {}", path, e.what()));
  }
  auto field = [&](const char* key) { return a.info_.count(key) ? a.info_[key] : std::string("(none)"); };
  const std::string type = field("type");
  if (type != "flat" && type != "ivf-flat" && type != "ivf-pq" && type != "hnsw")
    throw std::runtime_error(fmt::format("{}: its header names type '{}', not one of {}", path, type, kTypes));
  if (field("model_fingerprint") != model_fingerprint)
    throw std::runtime_error(fmt::format("{}: this FAISS index was built by model fingerprint {}, the index beside it by {}; "
                                         "rebuild it with torchclip index --type {}",
                                         path, field("model_fingerprint"), model_fingerprint, field("type")));
  if (field("build_id") != build_id || field("rows") != std::to_string(rows))
    throw std::runtime_error(fmt::format("{}: this FAISS index ({} rows, build {}) is not the one the index beside it was built "
                                         "with ({} rows, build {}); rebuild it with torchclip index --type {}",
                                         path, field("rows"), field("build_id"), rows, build_id, field("type")));
  const long at = std::ftell(f.get());
  std::fseek(f.get(), 0, SEEK_END);
  a.info_["bytes"] = std::to_string(std::ftell(f.get()) - at);  // FAISS's own format
  std::fseek(f.get(), at, SEEK_SET);
  try {
    faiss::FileIOReader reader(f.get());
    reader.name = path;  // on-disk inverted lists (a merged index) are found beside this file
    if (a.info_.count("ivfdata")) {
      const MuteStdout mute;  // FAISS printf()s the path it resolves onto stdout, where torchclip's JSON goes
      a.index_.reset(faiss::read_index(&reader, faiss::IO_FLAG_ONDISK_SAME_DIR));
    } else {
      a.index_.reset(faiss::read_index(&reader));
    }
  } catch (const faiss::FaissException& e) {
    throw std::runtime_error(fmt::format("{}: FAISS could not read it: {}", path, e.msg));
  }
  if (a.index_->ntotal != rows) throw std::runtime_error(fmt::format("{}: holds {} rows, not {}", path, a.index_->ntotal, rows));
  if (const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(a.index_.get())) {
    if (const auto* od = dynamic_cast<const faiss::OnDiskInvertedLists*>(ivf->invlists)) {  // mapped: short would be SIGBUS
      std::error_code ec;
      const auto size = std::filesystem::file_size(od->filename, ec);
      if (ec || size < od->totsize)
        throw std::runtime_error(fmt::format("{}: its lists file {} is {} bytes, {} expected (truncated or missing)", path,
                                             od->filename, ec ? 0 : size, od->totsize));
    }
  }
  return a;
}

std::vector<std::vector<SearchHit>> AnnIndex::search(const at::Tensor& queries, int64_t k, const AnnSearchOptions& o,
                                                     const at::Tensor& exact_rows) const {
  const auto q = queries.to(at::kFloat).contiguous();  // [Q, E]
  const int64_t Q = q.size(0), N = index_->ntotal;
  // IVF-PQ's scores are of the codes: `candidates` rows are rescored on the stored rows. HNSW's
  // are L2 distances, and fp16-rounded rows are not exactly unit (x.q = 1 - |x - q|^2 / 2 is off
  // by ~1e-4): its k rows are rescored too.
  const bool rerank = type() == "ivf-pq" || type() == "hnsw";
  // HNSW's search breadth: FAISS 1.7.3 sizes its queue by the index's efSearch or the rows asked
  // for, whichever is larger (the parameter's efSearch only stops the search sooner), so ef rows
  // are asked for, rescored, and cut to k.
  const int64_t ef = type() == "hnsw" ? (o.ef_search() > 0 ? o.ef_search() : std::max<int64_t>(64, 2 * k)) : 0;
  const int64_t want = std::min<int64_t>(N, type() == "ivf-pq" ? std::max(k, o.candidates()) : std::max(k, ef));
  std::vector<float> scores(static_cast<size_t>(Q * want));
  std::vector<faiss::Index::idx_t> labels(static_cast<size_t>(Q * want));
  faiss::SearchParametersIVF ivf;
  faiss::SearchParametersHNSW hnsw;
  const faiss::SearchParameters* params = nullptr;
  if (type() == "ivf-flat" || type() == "ivf-pq") {
    ivf.nprobe = static_cast<size_t>(o.nprobe() > 0 ? o.nprobe() : number(info_, "nprobe"));
    params = &ivf;
  } else if (type() == "hnsw") {
    hnsw.efSearch = static_cast<int>(want);
    params = &hnsw;
  }
  try {
    index_->search(Q, q.data_ptr<float>(), want, scores.data(), labels.data(), params);
  } catch (const faiss::FaissException& e) {
    throw std::runtime_error(fmt::format("FAISS search failed: {}", e.msg));
  }
  std::vector<std::vector<SearchHit>> out(static_cast<size_t>(Q));
  for (int64_t i = 0; i < Q; ++i) {
    std::vector<SearchHit> hits;
    for (int64_t j = 0; j < want; ++j) {
      const auto label = labels[static_cast<size_t>(i * want + j)];
      if (label >= 0) hits.push_back({label, scores[static_cast<size_t>(i * want + j)]});
    }
    if (rerank && !hits.empty()) {  // exact scores of the candidates on the stored rows
      std::vector<int64_t> ids;
      for (const auto& h : hits) ids.push_back(h.row);
      const auto exact = at::matmul(exact_rows.index_select(0, at::tensor(ids, at::kLong)).to(at::kFloat), q[i]);  // [C]
      const float* s = exact.data_ptr<float>();
      for (size_t j = 0; j < hits.size(); ++j) hits[j].score = s[j];
    }
    std::stable_sort(hits.begin(), hits.end(),
                     [](const SearchHit& a, const SearchHit& b) { return a.score > b.score || (a.score == b.score && a.row < b.row); });
    if (static_cast<int64_t>(hits.size()) > k) hits.resize(static_cast<size_t>(k));
    out[static_cast<size_t>(i)] = std::move(hits);
  }
  return out;
}

#else  // a build without FAISS: the same API, every use an error naming the option

void AnnIndex::FaissDeleter::operator()(faiss::Index*) const {}  // never holds one
AnnIndex::AnnIndex() = default;
AnnIndex::~AnnIndex() = default;
AnnIndex::AnnIndex(AnnIndex&&) noexcept = default;
AnnIndex& AnnIndex::operator=(AnnIndex&&) noexcept = default;
namespace {
[[noreturn]] void no_faiss(const std::string& what) {
  throw std::invalid_argument(fmt::format("{} needs FAISS, which this build leaves out (-DTORCHCLIP_FAISS=OFF, or "
                                          "TORCHCLIP_OPENCV=OFF); rebuild with it, or use --type exact",
                                          what));
}
}  // namespace
AnnIndex AnnIndex::build(const at::Tensor&, const AnnOptions& o) { no_faiss("index --type " + o.type()); }
AnnIndex AnnIndex::refill(const at::Tensor&) const { no_faiss("updating a FAISS index"); }
AnnIndex AnnIndex::merge_on_disk(std::vector<AnnIndex>, const std::vector<std::vector<int64_t>>&, const std::vector<std::string>&,
                                 const std::string& path) {
  no_faiss("merging FAISS indexes into " + path);
}
int64_t AnnIndex::save(const std::string& path) const { no_faiss(path); }
AnnIndex AnnIndex::load(const std::string& path, const std::string&, int64_t, const std::string&) {
  no_faiss(path + " (the FAISS index beside this index)");
}
std::vector<std::vector<SearchHit>> AnnIndex::search(const at::Tensor&, int64_t, const AnnSearchOptions&, const at::Tensor&) const {
  no_faiss("a FAISS search");
}

#endif

}  // namespace torchclip
