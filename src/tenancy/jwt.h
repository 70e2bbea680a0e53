// JwtVerifier: checks JSON Web Tokens (RFC 7519, compact JWS) with OpenSSL's
// EVP API, and says which tenant a good token speaks for.
//
// The configured algorithm decides, never the token: a verifier configured
// for RS256 refuses a token whose header says HS256 (or anything else)
// before looking at its signature, so an HS256 token "signed" with the RSA
// public key's PEM as its secret fails (algorithm confusion). `alg: none`
// is always refused. Headers that point at other keys (`jwk`, `jku`, `x5u`,
// `x5c`) are ignored: only configured keys are trusted. A header with
// `crit` is refused (no extension is understood).
//
// Keys:
//  - HS256: the secret is read at create() from the environment variable
//    named by `secret_env`; at least 32 bytes (RFC 7518 §3.2).
//  - RS256 (RSA, 2048 bits or more) and ES256 (EC P-256): either one PEM
//    public key (`public_key_file`, SubjectPublicKeyInfo) or a JWKS file
//    (`jwks_file`). With a JWKS, the token's `kid` selects the key among the
//    keys of the right type (a key's `alg` and `use`, where present, must be
//    the configured algorithm and "sig"; other keys are skipped, and two
//    usable keys with one kid are refused); a token without `kid` is
//    accepted only when exactly one key fits. Files are read at create(): reloading
//    means creating a new verifier.
//  ES256 signatures are JOSE's raw r||s (64 bytes), turned into DER for EVP.
//
// Claims: `exp` is required; a token is expired once now >= exp + leeway.
// `nbf`, when present, must satisfy nbf <= now + leeway. `iss` must equal
// `issuer` and `aud` (a string or an array) must hold `audience` whenever
// those are configured (empty: not checked). The leeway is at most 60 s.
// The tenant is the string claim named `tenant_claim` ("tenant" by
// default) and must be a valid tenant name (validate_tenant_name).
//
// Input limits: a token longer than max_token_bytes (8 KB by default) is
// refused before decoding; base64url is decoded strictly (crypto.h); the
// header and payload JSON are read with parse_json with a small depth
// limit.
//
// Thread-safety: verify() is const and thread-safe. Ownership: create()
// returns a verifier the caller owns; the WallClock outlives it.
// Errors: create() gives InvalidArgument (param names the config field)
// for a bad configuration, an unset variable or an unreadable key;
// verify() gives Unauthenticated, with a short reason, for every bad token.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "tenancy/wall_clock.h"

namespace llmpool::tenancy {

enum class JwtAlgorithm { kHs256, kRs256, kEs256 };

// "HS256", "RS256" or "ES256" (exactly); InvalidArgument otherwise.
Result<JwtAlgorithm> parse_jwt_algorithm(std::string_view name);
const char* jwt_algorithm_name(JwtAlgorithm alg);

inline constexpr int64_t kMaxJwtLeewaySeconds = 60;

struct JwtConfig {
  JwtAlgorithm algorithm = JwtAlgorithm::kHs256;
  std::string secret_env;       // HS256 only
  std::string public_key_file;  // RS256 / ES256: one of these two
  std::string jwks_file;
  std::string issuer;    // empty: `iss` not checked
  std::string audience;  // empty: `aud` not checked
  std::string tenant_claim = "tenant";
  int64_t leeway_seconds = 30;  // 0..60
  size_t max_token_bytes = 8192;
};

struct JwtIdentity {
  std::string tenant;
  std::string subject;  // `sub`, or empty
  std::string key_id;   // the header's `kid`, or empty
  int64_t expires_at = 0;
  nlohmann::json claims;  // the whole payload, depth-limited
};

class JwtVerifier {
 public:
  static Result<std::unique_ptr<JwtVerifier>> create(const JwtConfig& config,
                                                     const WallClock& clock = SystemWallClock::instance());
  ~JwtVerifier();
  JwtVerifier(const JwtVerifier&) = delete;
  JwtVerifier& operator=(const JwtVerifier&) = delete;

  // Checks `token` (the compact form, without "Bearer ").
  Result<JwtIdentity> verify(std::string_view token) const;

  const JwtConfig& config() const { return config_; }

 private:
  struct Keys;
  JwtVerifier(JwtConfig config, std::unique_ptr<Keys> keys, const WallClock& clock);

  JwtConfig config_;
  std::unique_ptr<Keys> keys_;
  const WallClock& clock_;
};

}  // namespace llmpool::tenancy
