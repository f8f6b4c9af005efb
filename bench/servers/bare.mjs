/** Contestant 1, the anchor: bare Express, `/me` returns a fixed user (no authentication at all). */
import express from 'express';
import { ALICE, listen, ready } from './common.mjs';

const { server, origin } = await listen();
const app = express();
app.get('/me', (_req, res) => res.json(ALICE));
server.on('request', app);
ready(server, { origin });
