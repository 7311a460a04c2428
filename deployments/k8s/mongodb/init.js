// Forms the replica set rs0 from mongodb-0, mongodb-1 and mongodb-2 and creates the user
// policyhooks (readWrite on the database policyhooks). Run by the Job mongodb-init with
// `mongosh --nodb --file`; every step checks first, so a rerun changes nothing but the user's
// password, which it sets from MONGO_APP_PASSWORD.
const setName = "rs0";
const hosts = [0, 1, 2].map((i) => `mongodb-${i}.mongodb:27017`);
const root = `${encodeURIComponent(process.env.MONGO_ROOT_USERNAME)}:${encodeURIComponent(process.env.MONGO_ROOT_PASSWORD)}`;

// retry calls fn until it returns without throwing, for about five minutes: members may still be
// starting, and an election may be under way.
function retry(what, fn) {
  for (let attempt = 1; ; attempt++) {
    try {
      return fn();
    } catch (err) {
      if (attempt >= 60) {
        throw err;
      }
      print(`${what}: ${err.message}; retrying in 5 s`);
      sleep(5000);
    }
  }
}

// command runs cmd and returns the server's answer, also when it is an error (ok: 0), which
// mongosh throws; errors without a server answer, such as network errors, are thrown on.
function command(db, cmd) {
  try {
    return db.runCommand(cmd);
  } catch (err) {
    if (err.codeName === undefined) {
      throw err;
    }
    return { ok: 0, codeName: err.codeName, errmsg: err.message };
  }
}

// Every member ran the image's first-start steps on its own and holds the root user, so the
// first one can be reached directly before the set exists.
const first = retry("connect to mongodb-0", () => {
  const db = new Mongo(`mongodb://${root}@${hosts[0]}/admin?directConnection=true`).getDB("admin");
  db.runCommand({ ping: 1 });
  return db;
});

retry("initiate the replica set", () => {
  const status = command(first, { replSetGetStatus: 1 });
  if (status.ok === 1) {
    print(`replica set ${status.set} exists`);
    return;
  }
  if (status.codeName !== "NotYetInitialized") {
    throw new Error(`replSetGetStatus: ${status.codeName}: ${status.errmsg}`);
  }
  const res = command(first, {
    replSetInitiate: {
      _id: setName,
      members: hosts.map((host, i) => ({ _id: i, host, priority: i === 0 ? 2 : 1 })),
    },
  });
  if (res.ok !== 1) {
    throw new Error(`replSetInitiate: ${res.codeName}: ${res.errmsg}`);
  }
  print(`replica set ${setName} initiated`);
});

const app = retry("reach the primary", () => {
  const db = new Mongo(`mongodb://${root}@${hosts.join(",")}/admin?replicaSet=${setName}`).getDB("admin");
  if (!db.hello().primary) {
    throw new Error("no primary yet");
  }
  return db.getSiblingDB("policyhooks");
});

retry("create the user policyhooks", () => {
  const password = process.env.MONGO_APP_PASSWORD;
  if (app.getUser("policyhooks") === null) {
    app.createUser({ user: "policyhooks", pwd: password, roles: [{ role: "readWrite", db: "policyhooks" }] });
    print("user policyhooks created");
  } else {
    app.updateUser("policyhooks", { pwd: password });
    print("user policyhooks exists; password set");
  }
});
