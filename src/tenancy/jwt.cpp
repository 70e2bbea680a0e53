#include "tenancy/jwt.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "common/json.h"
#include "tenancy/crypto.h"
#include "tenancy/tenant_store.h"

namespace llmpool::tenancy {

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};

constexpr size_t kMaxKeyFileBytes = 1 << 20;
constexpr JsonLimits kHeaderLimits{.max_depth = 4, .max_bytes = 0};
constexpr JsonLimits kPayloadLimits{.max_depth = 16, .max_bytes = 0};
constexpr JsonLimits kJwksLimits{.max_depth = 8, .max_bytes = kMaxKeyFileBytes};

Status bad_config(std::string msg, std::string param) {
  return Status::invalid_argument("jwt: " + std::move(msg), std::move(param));
}
Status refuse(std::string why) { return Status::unauthenticated("invalid token: " + std::move(why)); }

Result<std::string> read_file(const std::string& path, const char* param) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return bad_config("cannot read " + path, param);
  std::string text;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxKeyFileBytes) return bad_config(path + " is larger than 1 MiB", param);
  }
  return text;
}

bool is_rsa_key(EVP_PKEY* k) { return EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) >= 2048; }

bool is_p256_key(EVP_PKEY* k) {
  if (!EVP_PKEY_is_a(k, "EC")) return false;
  char group[64] = {0};
  size_t len = 0;
  if (!EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len)) return false;
  return std::string_view(group, len) == "prime256v1";
}

bool key_fits(JwtAlgorithm alg, EVP_PKEY* k) {
  return alg == JwtAlgorithm::kRs256 ? is_rsa_key(k) : alg == JwtAlgorithm::kEs256 && is_p256_key(k);
}

PkeyPtr pkey_from_params(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0) return nullptr;
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) <= 0) return nullptr;
  return PkeyPtr(raw);
}

// One JWK (RFC 7517) as a public key, or null when it is not a usable
// public key for `alg`.
PkeyPtr pkey_from_jwk(JwtAlgorithm alg, const nlohmann::json& jwk) {
  auto str = [&](const char* name) -> std::optional<std::string> {
    auto it = jwk.find(name);
    if (it == jwk.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  auto b64 = [&](const char* name) -> std::optional<std::string> {
    auto s = str(name);
    return s ? base64url_decode(*s) : std::nullopt;
  };
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld) return nullptr;
  if (alg == JwtAlgorithm::kRs256) {
    if (str("kty") != "RSA") return nullptr;
    auto n = b64("n"), e = b64("e");
    if (!n || !e || n->empty() || e->empty()) return nullptr;
    BnPtr bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()), static_cast<int>(n->size()), nullptr));
    BnPtr bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()), static_cast<int>(e->size()), nullptr));
    if (!bn_n || !bn_e || !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) ||
        !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get())) {
      return nullptr;
    }
    PkeyPtr key = pkey_from_params("RSA", bld.get());
    return key && is_rsa_key(key.get()) ? std::move(key) : nullptr;
  }
  if (str("kty") != "EC" || str("crv") != "P-256") return nullptr;
  auto x = b64("x"), y = b64("y");
  if (!x || !y || x->size() != 32 || y->size() != 32) return nullptr;
  std::string point = "\x04" + *x + *y;
  if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
      !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size())) {
    return nullptr;
  }
  PkeyPtr key = pkey_from_params("EC", bld.get());
  return key && is_p256_key(key.get()) ? std::move(key) : nullptr;
}

bool verify_with_pkey(EVP_PKEY* key, std::string_view signed_part, std::string_view sig) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
}

// JOSE's ES256 signature is r||s, 32 bytes each; EVP wants DER.
std::optional<std::string> es256_raw_to_der(std::string_view raw) {
  if (raw.size() != 64) return std::nullopt;
  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr);
  if (!sig || !r || !s || !ECDSA_SIG_set0(sig.get(), r, s)) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  unsigned char* der = nullptr;
  int len = i2d_ECDSA_SIG(sig.get(), &der);
  if (len <= 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// A NumericDate (RFC 7519 §2): a JSON number of seconds, maybe fractional.
std::optional<int64_t> numeric_date(const nlohmann::json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(INT64_MAX) ? std::nullopt : std::optional<int64_t>(static_cast<int64_t>(u));
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 9e15) return std::nullopt;
    return static_cast<int64_t>(std::floor(d));
  }
  return std::nullopt;
}

}  // namespace

Result<JwtAlgorithm> parse_jwt_algorithm(std::string_view name) {
  if (name == "HS256") return JwtAlgorithm::kHs256;
  if (name == "RS256") return JwtAlgorithm::kRs256;
  if (name == "ES256") return JwtAlgorithm::kEs256;
  return bad_config("algorithm must be HS256, RS256 or ES256", "algorithm");
}

const char* jwt_algorithm_name(JwtAlgorithm alg) {
  switch (alg) {
    case JwtAlgorithm::kHs256: return "HS256";
    case JwtAlgorithm::kRs256: return "RS256";
    case JwtAlgorithm::kEs256: return "ES256";
  }
  return "?";
}

struct JwtVerifier::Keys {
  std::string hs256_secret;
  struct Entry {
    std::string kid;  // empty when the key has none (a PEM key)
    PkeyPtr key;
  };
  std::vector<Entry> public_keys;
  bool from_jwks = false;
};

JwtVerifier::JwtVerifier(JwtConfig config, std::unique_ptr<Keys> keys, const WallClock& clock)
    : config_(std::move(config)), keys_(std::move(keys)), clock_(clock) {}
JwtVerifier::~JwtVerifier() = default;

Result<std::unique_ptr<JwtVerifier>> JwtVerifier::create(const JwtConfig& config, const WallClock& clock) {
  if (config.leeway_seconds < 0 || config.leeway_seconds > kMaxJwtLeewaySeconds) {
    return bad_config("leeway must be within 0..60 seconds", "leeway_seconds");
  }
  if (config.max_token_bytes == 0) return bad_config("max_token_bytes must be positive", "max_token_bytes");
  if (config.tenant_claim.empty()) return bad_config("tenant_claim must not be empty", "tenant_claim");
  auto keys = std::make_unique<Keys>();
  if (config.algorithm == JwtAlgorithm::kHs256) {
    if (!config.public_key_file.empty() || !config.jwks_file.empty()) {
      return bad_config("HS256 takes a secret, not public keys", "algorithm");
    }
    if (config.secret_env.empty()) return bad_config("HS256 needs secret_env", "secret_env");
    const char* secret = std::getenv(config.secret_env.c_str());
    if (!secret) return bad_config("the environment variable " + config.secret_env + " is not set", "secret_env");
    keys->hs256_secret = secret;
    if (keys->hs256_secret.size() < 32) {
      return bad_config("the HS256 secret in " + config.secret_env + " is shorter than 32 bytes", "secret_env");
    }
  } else {
    if (!config.secret_env.empty()) return bad_config("RS256 and ES256 take public keys, not a secret", "secret_env");
    if (config.public_key_file.empty() == config.jwks_file.empty()) {
      return bad_config("give exactly one of public_key_file and jwks_file", "public_key_file");
    }
    if (!config.public_key_file.empty()) {
      Result<std::string> pem = read_file(config.public_key_file, "public_key_file");
      if (!pem) return pem.status();
      std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())));
      PkeyPtr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
      if (!key) return bad_config(config.public_key_file + " holds no PEM public key", "public_key_file");
      if (!key_fits(config.algorithm, key.get())) {
        return bad_config(config.public_key_file + " is not " +
                              (config.algorithm == JwtAlgorithm::kRs256 ? "an RSA key of 2048 bits or more"
                                                                        : "an EC P-256 key"),
                          "public_key_file");
      }
      keys->public_keys.push_back({"", std::move(key)});
    } else {
      keys->from_jwks = true;
      Result<std::string> text = read_file(config.jwks_file, "jwks_file");
      if (!text) return text.status();
      Result<nlohmann::json> jwks = parse_json(*text, kJwksLimits, "the JWKS file", "jwks_file");
      if (!jwks) return jwks.status();
      if (!jwks->is_object() || !jwks->contains("keys") || !(*jwks)["keys"].is_array()) {
        return bad_config(config.jwks_file + " has no \"keys\" array", "jwks_file");
      }
      const char* alg_name = jwt_algorithm_name(config.algorithm);
      for (const auto& jwk : (*jwks)["keys"]) {
        if (!jwk.is_object()) continue;
        auto alg = jwk.find("alg");
        if (alg != jwk.end() && (!alg->is_string() || *alg != alg_name)) continue;
        auto use = jwk.find("use");
        if (use != jwk.end() && (!use->is_string() || *use != "sig")) continue;
        PkeyPtr key = pkey_from_jwk(config.algorithm, jwk);
        if (!key) continue;
        auto kid_it = jwk.find("kid");
        std::string kid = kid_it != jwk.end() && kid_it->is_string() ? kid_it->get<std::string>() : "";
        // Two usable keys under one kid would make the choice ambiguous.
        for (const auto& e : keys->public_keys) {
          if (e.kid == kid) {
            return bad_config(config.jwks_file + " has two usable keys with kid \"" + kid + "\"", "jwks_file");
          }
        }
        keys->public_keys.push_back({std::move(kid), std::move(key)});
      }
      if (keys->public_keys.empty()) {
        return bad_config(config.jwks_file + std::string(" holds no usable ") + alg_name + " key", "jwks_file");
      }
    }
  }
  return std::unique_ptr<JwtVerifier>(new JwtVerifier(config, std::move(keys), clock));
}

Result<JwtIdentity> JwtVerifier::verify(std::string_view token) const {
  if (token.size() > config_.max_token_bytes) return refuse("too long");
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return refuse("not three dot-separated parts");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view sig_b64 = token.substr(dot2 + 1);
  std::optional<std::string> header_text = base64url_decode(header_b64);
  if (!header_text || header_text->empty()) return refuse("the header is not base64url");
  Result<nlohmann::json> header = parse_json(*header_text, kHeaderLimits, "the token header");
  if (!header || !header->is_object()) return refuse("the header is not a JSON object");
  auto alg = header->find("alg");
  if (alg == header->end() || !alg->is_string()) return refuse("the header has no alg");
  const std::string& alg_name = alg->get_ref<const std::string&>();
  if (alg_name == "none" || alg_name == "None" || alg_name == "NONE") return refuse("alg none is not accepted");
  if (alg_name != jwt_algorithm_name(config_.algorithm)) {
    return refuse("alg " + std::string(alg_name.size() <= 16 ? alg_name : "(long)") + " is not the configured " +
                  jwt_algorithm_name(config_.algorithm));
  }
  if (header->contains("crit")) return refuse("crit extensions are not understood");
  std::string kid;
  if (auto it = header->find("kid"); it != header->end()) {
    if (!it->is_string()) return refuse("kid is not a string");
    kid = it->get<std::string>();
  }

  std::optional<std::string> sig = base64url_decode(sig_b64);
  if (!sig || sig->empty()) return refuse("the signature is not base64url");
  std::string_view signed_part = token.substr(0, dot2);
  bool good = false;
  if (config_.algorithm == JwtAlgorithm::kHs256) {
    good = constant_time_equal(hmac_sha256(keys_->hs256_secret, signed_part), *sig);
  } else {
    EVP_PKEY* key = nullptr;
    if (keys_->from_jwks && !kid.empty()) {
      for (const auto& e : keys_->public_keys) {
        if (e.kid == kid) key = e.key.get();  // kids are unique (create() checks)
      }
      if (!key) return refuse("no configured key has this kid");
    } else if (keys_->public_keys.size() == 1) {
      key = keys_->public_keys.front().key.get();
    } else {
      return refuse("the token has no kid to choose a key");
    }
    if (config_.algorithm == JwtAlgorithm::kEs256) {
      std::optional<std::string> der = es256_raw_to_der(*sig);
      good = der && verify_with_pkey(key, signed_part, *der);
    } else {
      good = verify_with_pkey(key, signed_part, *sig);
    }
  }
  if (!good) return refuse("bad signature");

  // The payload is read only once the signature holds.
  std::optional<std::string> payload_text = base64url_decode(payload_b64);
  if (!payload_text) return refuse("the payload is not base64url");
  Result<nlohmann::json> claims = parse_json(*payload_text, kPayloadLimits, "the token payload");
  if (!claims || !claims->is_object()) return refuse("the payload is not a JSON object");

  int64_t now = clock_.now_unix();
  int64_t leeway = config_.leeway_seconds;
  auto exp_it = claims->find("exp");
  if (exp_it == claims->end()) return refuse("exp is missing");
  std::optional<int64_t> exp = numeric_date(*exp_it);
  if (!exp) return refuse("exp is not a number");
  if (now - leeway >= *exp) return refuse("expired");  // now >= exp + leeway, without overflow
  if (auto it = claims->find("nbf"); it != claims->end()) {
    std::optional<int64_t> nbf = numeric_date(*it);
    if (!nbf) return refuse("nbf is not a number");
    if (*nbf > now + leeway) return refuse("not valid yet (nbf)");
  }
  if (!config_.issuer.empty()) {
    auto it = claims->find("iss");
    if (it == claims->end() || !it->is_string() || *it != config_.issuer) return refuse("wrong issuer");
  }
  if (!config_.audience.empty()) {
    auto it = claims->find("aud");
    bool ok = false;
    if (it != claims->end() && it->is_string()) ok = *it == config_.audience;
    if (it != claims->end() && it->is_array()) {
      for (const auto& a : *it) ok = ok || (a.is_string() && a == config_.audience);
    }
    if (!ok) return refuse("wrong audience");
  }
  auto tenant = claims->find(config_.tenant_claim);
  if (tenant == claims->end() || !tenant->is_string()) return refuse("no " + config_.tenant_claim + " claim");
  if (!validate_tenant_name(tenant->get_ref<const std::string&>())) {
    return refuse("the tenant claim is not a tenant name");
  }

  JwtIdentity id;
  id.tenant = tenant->get<std::string>();
  if (auto it = claims->find("sub"); it != claims->end() && it->is_string()) id.subject = it->get<std::string>();
  id.key_id = kid;
  id.expires_at = *exp;
  id.claims = std::move(*claims);
  return id;
}

}  // namespace llmpool::tenancy
