// `npm run dev`: Vite serves this directory as it is (there is nothing to build) and proxies the
// BFF's paths to a running BFF, so that the page, /bff and /api share one origin, as in production.
//
//   BFF_PUBLIC_URL=http://127.0.0.1:5173 bff demo --port 8000      # the BFF, told where the browser is
//   BFF_URL=http://127.0.0.1:8000 npm run dev                      # this server, on :5173
//
// Why the BFF's public_url must be THIS server's origin, not its own:
//  - the provider sends the browser back to <public_url>/bff/callback. That has to come back through
//    Vite: the login-state cookie was set through Vite (cookies belong to the host the browser saw),
//    and the BFF's redirect to `returnTo` after the callback has to land on the Vite page, not on the
//    BFF's own copy of it;
//  - the BFF checks the browser's `Origin` (http://127.0.0.1:5173) against public_url. With the two
//    equal, `Origin` is forwarded untouched and the check stays real instead of being rewritten away.
// For the same reason `changeOrigin` stays false: the BFF sees `Host: 127.0.0.1:5173`, the host it
// was told it serves, as behind any reverse proxy (Caddy and nginx pass `Host` through too), and
// `xfwd` adds X-Forwarded-For/-Proto/-Host. The identity provider of `bff demo` is not proxied: the
// browser goes to it directly, as it would to a real provider on another origin.
import { defineConfig } from 'vite';

const target = process.env.BFF_URL || 'http://127.0.0.1:8000';

const toBff = {
  target,
  changeOrigin: false,
  xfwd: true,
  ws: false,
  configure(proxy) {
    proxy.on('error', (error) => console.error(`[bff proxy] ${target}: ${error.message}`));
  },
};

export default defineConfig({
  root: '.',
  appType: 'spa',
  server: {
    host: '127.0.0.1',
    port: 5173,
    strictPort: true,
    proxy: {
      '/bff/': toBff,
      '/api/': toBff,
    },
  },
  plugins: [
    {
      name: 'bff-reminder',
      configureServer(server) {
        server.httpServer?.once('listening', () => {
          const address = server.httpServer.address();
          const origin = typeof address === 'object' && address ? `http://${address.address}:${address.port}` : '';
          console.log(`\n  /bff and /api go to the BFF at ${target}.`);
          console.log(`  Start the BFF with BFF_PUBLIC_URL=${origin || '<this origin>'} so that logins come back here.\n`);
        });
      },
    },
  ],
});
