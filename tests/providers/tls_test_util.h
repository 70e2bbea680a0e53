// For the https tests: a certificate authority and server certificates
// made at test time with OpenSSL's C API (nothing read from disk, nothing
// run), and a TLS server on loopback that terminates TLS and relays the
// bytes to a plain upstream (the tests' FakeUpstream), so that every fake
// answer the plain tests use is served over https unchanged.
#pragma once

#include <utility>  // before Asio with g++ 12

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace llmpool::providers::testing {

// A key and its certificate, as PEM, and the OpenSSL objects for signing.
struct Identity {
  std::shared_ptr<EVP_PKEY> key;
  std::shared_ptr<X509> cert;
  std::string key_pem;
  std::string cert_pem;
};

namespace tls_detail {

inline std::string bio_string(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return std::string(data, static_cast<size_t>(n));
}

inline void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) throw std::runtime_error(std::string("bad extension ") + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

}  // namespace tls_detail

// A certificate for `common_name`, signed by `issuer` (self-signed when
// null). A CA gets CA:TRUE and keyCertSign; a server certificate gets
// serverAuth and `subject_alt_names` ("DNS:localhost,IP:127.0.0.1").
inline Identity make_identity(const std::string& common_name, const Identity* issuer, bool is_ca,
                              const std::string& subject_alt_names = "") {
  static std::atomic<long> serial{1};
  Identity id;
  id.key.reset(EVP_EC_gen("P-256"), EVP_PKEY_free);
  if (!id.key) throw std::runtime_error("EVP_EC_gen failed");
  id.cert.reset(X509_new(), X509_free);
  X509* x = id.cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, id.key.get());
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509* issuer_cert = issuer ? issuer->cert.get() : x;
  X509_set_issuer_name(x, X509_get_subject_name(issuer_cert));
  tls_detail::add_ext(x, issuer_cert, NID_subject_key_identifier, "hash");
  tls_detail::add_ext(x, issuer_cert, NID_authority_key_identifier, "keyid:always");
  if (is_ca) {
    tls_detail::add_ext(x, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    tls_detail::add_ext(x, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    tls_detail::add_ext(x, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    tls_detail::add_ext(x, issuer_cert, NID_key_usage, "critical,digitalSignature");
    tls_detail::add_ext(x, issuer_cert, NID_ext_key_usage, "serverAuth");
    if (!subject_alt_names.empty())
      tls_detail::add_ext(x, issuer_cert, NID_subject_alt_name, subject_alt_names.c_str());
  }
  if (X509_sign(x, issuer ? issuer->key.get() : id.key.get(), EVP_sha256()) == 0)
    throw std::runtime_error("X509_sign failed");
  std::unique_ptr<BIO, decltype(&BIO_free)> kb(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PrivateKey(kb.get(), id.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  id.key_pem = tls_detail::bio_string(kb.get());
  std::unique_ptr<BIO, decltype(&BIO_free)> cb(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(cb.get(), x);
  id.cert_pem = tls_detail::bio_string(cb.get());
  return id;
}

// Writes `text` to a fresh file in the test's temporary folder; removes it
// when destroyed.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    static std::atomic<int> n{0};
    path_ = ::testing::TempDir() + "llmpool-tls-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".pem";
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A TLS server on 127.0.0.1 (port 0: a free one) presenting `server`'s
// certificate, that relays each connection's bytes to and from the plain
// server at 127.0.0.1:`backend_port`. One thread of its own; stopped and
// joined by the destructor.
class TlsRelay {
 public:
  TlsRelay(const Identity& server, uint16_t backend_port)
      : ctx_(boost::asio::ssl::context::tls_server), acceptor_(ioc_), backend_port_(backend_port) {
    namespace asio = boost::asio;
    ctx_.use_certificate(asio::buffer(server.cert_pem), asio::ssl::context::pem);
    ctx_.use_private_key(asio::buffer(server.key_pem), asio::ssl::context::pem);
    asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~TlsRelay() {
    ioc_.stop();
    thread_.join();
  }

  uint16_t port() const { return port_; }
  std::string url(const std::string& host, const std::string& path = "") const {
    return "https://" + host + ":" + std::to_string(port_) + path;
  }
  // Connections whose handshake succeeded / failed.
  int handshakes() const { return handshakes_.load(); }
  int failed_handshakes() const { return failed_.load(); }
  // The server names (SNI) clients sent, "" for none, in order.
  std::vector<std::string> server_names() {
    std::lock_guard<std::mutex> lock(mu_);
    return names_;
  }

 private:
  using Tcp = boost::asio::ip::tcp;
  using TlsSocket = boost::asio::ssl::stream<Tcp::socket>;

  struct Session {
    Session(Tcp::socket s, boost::asio::ssl::context& ctx, boost::asio::io_context& ioc)
        : tls(std::move(s), ctx), backend(ioc) {}
    void close() {
      boost::system::error_code ignored;
      tls.next_layer().close(ignored);
      backend.close(ignored);
    }
    TlsSocket tls;
    Tcp::socket backend;
  };

  boost::asio::awaitable<void> accept_loop() {
    namespace asio = boost::asio;
    for (;;) {
      boost::system::error_code ec;
      Tcp::socket s = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      asio::co_spawn(ioc_, serve(std::make_shared<Session>(std::move(s), ctx_, ioc_)), asio::detached);
    }
  }

  boost::asio::awaitable<void> serve(std::shared_ptr<Session> s) {
    namespace asio = boost::asio;
    boost::system::error_code ec;
    co_await s->tls.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      failed_++;
      s->close();
      co_return;
    }
    handshakes_++;
    {
      const char* sni = SSL_get_servername(s->tls.native_handle(), TLSEXT_NAMETYPE_host_name);
      std::lock_guard<std::mutex> lock(mu_);
      names_.push_back(sni ? sni : "");
    }
    co_await s->backend.async_connect(Tcp::endpoint(asio::ip::make_address("127.0.0.1"), backend_port_),
                                      asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      s->close();
      co_return;
    }
    asio::co_spawn(ioc_, pump(s, s->tls, s->backend), asio::detached);
    co_await pump(s, s->backend, s->tls);
  }

  // Copies `from` to `to` until either side ends; then closes both.
  template <class From, class To>
  static boost::asio::awaitable<void> pump(std::shared_ptr<Session> s, From& from, To& to) {
    namespace asio = boost::asio;
    char buf[16384];
    for (;;) {
      boost::system::error_code ec;
      size_t n = co_await from.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (!ec && n > 0) co_await asio::async_write(to, asio::buffer(buf, n), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
    }
    s->close();
  }

  boost::asio::ssl::context ctx_;
  boost::asio::io_context ioc_;  // after ctx_: its pending sessions go first
  Tcp::acceptor acceptor_;
  uint16_t backend_port_;
  uint16_t port_ = 0;
  std::atomic<int> handshakes_{0};
  std::atomic<int> failed_{0};
  std::mutex mu_;
  std::vector<std::string> names_;
  std::thread thread_;
};

}  // namespace llmpool::providers::testing
